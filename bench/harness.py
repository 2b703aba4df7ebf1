"""The bench harness: rows, repeats with medians, the table and the JSON file.

A row measures Orchard and a plain baseline in the same process on the same machine and reports
their ratio (Orchard / baseline, lower is better) beside the absolute figures. Figures are never
asserted; `--quick` runs every row once on small sizes so the harness itself cannot rot.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import socket
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# One line per row per run, appended by every run (`--quick` ones too, marked so); the README's
# tables are `python -m bench --report`: the median over every full run, not the best one.
HISTORY = Path("bench/results/history.jsonl")


@dataclass
class Row:
    name: str
    metric: str
    orchard: float | None  # None: the row was skipped (`notes` says why)
    baseline: float | None
    unit: str
    goal: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.orchard is None or self.baseline in (None, 0):
            return None
        return self.orchard / self.baseline


def skipped(name: str, metric: str, reason: str, unit: str = "", goal: str = "") -> Row:
    """A row that could not run here (a service is unreachable): shown with its reason."""
    reason = " ".join(reason.split())
    return Row(name, metric, None, None, unit, goal=goal, notes=f"skipped: {reason}")


# -- what the bench may use on a shared machine (`--port-base`, `--db-prefix`, `--redis-db`) -----

_next_port = itertools.count()


def port() -> int:
    """A TCP port for a server the bench starts: BENCH_PORT_BASE, then +1, +2, ... when set
    (`--port-base`), else a free one the OS picks."""
    base = os.environ.get("BENCH_PORT_BASE")
    if base:
        return int(base) + next(_next_port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def db_name(suffix: str) -> str:
    """A PostgreSQL database name of the bench: BENCH_DB_PREFIX (`--db-prefix`, default
    orchard_bench) + `_suffix`."""
    prefix = os.environ.get("BENCH_DB_PREFIX") or "orchard_bench"
    return f"{prefix}_{suffix}"


def redis_db(offset: int, default: int) -> int:
    """A Redis database number: BENCH_REDIS_DB (`--redis-db`) + `offset` when set, else
    `default` (the rows' historical numbers)."""
    base = os.environ.get("BENCH_REDIS_DB")
    return int(base) + offset if base else default


@dataclass
class Context:
    quick: bool
    repeats: int
    device: str


ROWS: list[tuple[str, Callable[[Context], list[Row]]]] = []


def row(name: str):
    """Register a benchmark function producing one or more rows."""

    def register(fn):
        ROWS.append((name, fn))
        return fn

    return register


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of `fn` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["malloc_tuned"] = MALLOC_TUNED[0]
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


# Whether this bench process set glibc malloc as Orchard's workers do (`ml.memory`); recorded
# with the machine of every result.
MALLOC_TUNED = [False]


def format_table(rows: list[Row]) -> str:
    header = f"{'row':<28} {'metric':<34} {'orchard':>12} {'baseline':>12} {'ratio':>7}  goal"
    lines = [header, "-" * len(header)]
    for r in rows:
        base = f"{r.baseline:.4g}" if r.baseline is not None else "-"
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else "-"
        value = f"{r.orchard:>10.4g}{r.unit:>2}" if r.orchard is not None else f"{'-':>12}"
        lines.append(f"{r.name:<28} {r.metric:<34} {value} {base:>12} {ratio:>7}  {r.goal}")
        if r.notes:
            lines.append(f"{'':<28}   {r.notes}")
    return "\n".join(lines)


def write_json(rows: list[Row], path: Path, ctx: Context) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine(),
        "quick": ctx.quick,
        "device": ctx.device,
        "rows": [{**asdict(r), "ratio": r.ratio} for r in rows],
    }
    path.write_text(json.dumps(payload, indent=2))


def append_history(rows: list[Row], path: Path, ctx: Context, note: str = "") -> None:
    """Append one JSON line per measured row (date, machine, quick flag, `note`: what else ran on
    the machine), after each row so a killed run keeps what it measured. The rows' `extra` (raw
    samples, per-case tables) is left out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    where = machine()
    with path.open("a") as out:
        for r in rows:
            line = {k: v for k, v in asdict(r).items() if k != "extra"}
            line.update(
                date=stamp,
                machine=where,
                quick=ctx.quick,
                device=ctx.device,
                note=note,
                ratio=r.ratio,
            )
            out.write(json.dumps(line) + "\n")


def _figure(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    if abs(value) >= 1e4:
        text = f"{value:,.0f}"
    elif abs(value) >= 1e-3 or value == 0:
        text = f"{value:,.4g}"
    else:
        text = f"{value:.2g}"
    return f"{text} {unit}".strip()


def report(path: Path = HISTORY) -> str:
    """The README's table: per row and metric, the median of Orchard, baseline and ratio over
    every full (not `--quick`) run in the history, with the number of runs and the ratio's
    range, so a favourable re-run cannot stand in for the others."""
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    if path.exists():
        for text in path.read_text().splitlines():
            line = json.loads(text)
            if line["quick"] or line["orchard"] is None:
                continue
            runs[(line["name"], line["metric"])].append(line)

    def median(lines: list[dict], key: str) -> float | None:
        values = [line[key] for line in lines if line[key] is not None]
        return statistics.median(values) if values else None

    out = [
        "| row | metric | Orchard | baseline | ratio | goal | runs (ratio range) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, metric), lines in runs.items():
        last = lines[-1]
        ratios = [line["ratio"] for line in lines if line["ratio"] is not None]
        spread = f" ({min(ratios):.3g}-{max(ratios):.3g})" if len(ratios) > 1 else ""
        ratio = median(lines, "ratio")
        out.append(
            f"| `{name}` | {metric} | {_figure(median(lines, 'orchard'), last['unit'])} "
            f"| {_figure(median(lines, 'baseline'), last['unit'])} "
            f"| {'' if ratio is None else f'{ratio:.3g}'} | {last['goal']} "
            f"| {len(lines)}{spread} |"
        )
    return "\n".join(out)
