"""`python -m bench [--quick] [--only NAME] [--json PATH] [--note TEXT]`: run every row, print the
table of ratios, write the JSON results (default bench/results/latest.json) and append the rows to
the history (bench/results/history.jsonl). `python -m bench --report`: the README's table, medians
over every full run of the history."""

import argparse
import contextlib
import faulthandler
import importlib
import os
import signal
import sys
import traceback
from pathlib import Path

from bench.deployment import close_shared
from bench.harness import (
    HISTORY,
    ROWS,
    Context,
    append_history,
    format_table,
    machine,
    report,
    write_json,
)

MODULES = [
    "bench.training",
    "bench.rest",
    "bench.events",
    "bench.ingest",
    "bench.queue",
    "bench.directio",
    "bench.marketplace",
    "bench.labelstudio",
    "bench.export",
    "bench.labelprop",
    "bench.hanami",
    "bench.deployed",
]


class RowTimeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: int, name: str):
    """Fail a row that runs past `seconds` instead of hanging the whole run (a CI run once hung
    in a row until its 90-minute limit): every thread's stack is printed first, so the report shows
    where it waited, then the main thread gets RowTimeout."""

    def expire(signum, frame):
        raise RowTimeout(f"{name} ran past {seconds} s")

    faulthandler.dump_traceback_later(seconds, exit=False)
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds + 1)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="each row once, small sizes (CI)")
    parser.add_argument("--only", action="append", help="run only these rows")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", default="bench/results/latest.json")
    parser.add_argument("--port-base", type=int, help="servers listen on this port and up")
    parser.add_argument("--db-prefix", help="PostgreSQL database names start so (orchard_bench)")
    parser.add_argument(
        "--redis-db", type=int, help="Redis numbers used: this one and the next two (queue, team)"
    )
    parser.add_argument(
        "--row-timeout",
        type=int,
        default=None,
        help="seconds one row may run before it fails with every thread's stack printed "
        "(default 600 with --quick, 3600 otherwise)",
    )
    parser.add_argument(
        "--note",
        default="",
        help="kept with each history line: what else ran on the machine (e.g. shared, idle)",
    )
    parser.add_argument(
        "--no-malloc-tuning",
        dest="malloc_tuning",
        action="store_false",
        help="leave glibc malloc as it starts (by default this process keeps freed memory as "
        "Orchard's workers do: ml.memory; both sides of every in-process ratio share it)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=int(os.environ.get("TORCH_THREADS") or 1),
        help="torch threads of this process, both sides of every in-process ratio (default "
        "TORCH_THREADS or 1: torch's default fights the servers and workers a row starts on a "
        "small host; rows that pin their own count say so)",
    )
    parser.add_argument("--history", default=str(HISTORY), help="the history file (JSON lines)")
    parser.add_argument(
        "--report",
        action="store_true",
        help="print the README table (medians over the history's full runs) and exit",
    )
    args = parser.parse_args(argv)
    if args.report:
        print(report(Path(args.history)))
        return 0

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    for flag, name in (
        (args.port_base, "BENCH_PORT_BASE"),
        (args.db_prefix, "BENCH_DB_PREFIX"),
        (args.redis_db, "BENCH_REDIS_DB"),
    ):
        if flag is not None:
            os.environ[name] = str(flag)  # read by bench.harness.port/db_name/redis_db
    import torch

    torch.set_num_threads(max(1, args.torch_threads))
    if args.malloc_tuning:  # as in a worker (MALLOC_TUNING), for both sides of every ratio
        from bench.harness import MALLOC_TUNED
        from ml.memory import keep_freed_memory

        MALLOC_TUNED[0] = keep_freed_memory()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx = Context(quick=args.quick, repeats=args.repeats or (1 if args.quick else 5), device=device)
    for module in MODULES:
        importlib.import_module(module)

    row_timeout = args.row_timeout or (600 if args.quick else 3600)
    print(f"machine: {machine()}")
    rows, failed = [], []
    try:
        for name, fn in ROWS:
            if args.only and name not in args.only:
                continue
            print(f"... {name}", flush=True)
            try:
                with _deadline(row_timeout, name):
                    measured = fn(ctx)
                rows.extend(measured)
                append_history(measured, Path(args.history), ctx, note=args.note)
            except Exception:
                traceback.print_exc()
                failed.append(name)
            write_json(rows, Path(args.json), ctx)  # row by row: a killed run keeps its rows
    finally:
        close_shared()  # the embedded site the rows shared (bench.deployment.shared_embedded)
    print()
    print(format_table(rows))
    write_json(rows, Path(args.json), ctx)
    print(f"\nresults: {args.json}, appended to {args.history}")
    if failed:
        print(f"rows that failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
