"""Queue latency: how long a task waits between its creation and its start on an idle worker, with
a real `manage.py orchard_worker --queue cpu` process on Redis and on RabbitMQ, against
PostgreSQL (a worker process cannot share a SQLite test database well).

Orchard: `task_create` of a no-op task kind registered only by the bench (`bench_noop`), from the
commit of its row (the moment `transaction.on_commit` sends the message) to `Task.started_at`,
which the worker sets when it claims the row. Baseline: a bare Dramatiq actor (`bench_ping`, no
task row) sent on the same broker and queue and run by the same worker process, from `send()` to
the first line of the actor. p50 and p95 over N tasks, one at a time, the two kinds interleaved;
before each send the worker has been idle for 0.4 s (Redis: its polling has backed off to
Dramatiq's idle interval, `orchard_worker --worker-timeout`, 100 ms), plus a random 0-100 ms.

Each broker runs in a child process of the bench (`python -m bench.queue probe redis|rabbitmq`)
because the broker is chosen from BROKER_URL when Django starts. A row is skipped, with the
reason, when PostgreSQL or its broker does not answer. Addresses (environment):
`BENCH_PG_URL` (postgres://postgres@127.0.0.1:5432, database `orchard_bench_queue` is recreated),
`BENCH_REDIS_URL` (redis://127.0.0.1:6379/14: a database of its own, flushed),
`BENCH_AMQP_URL` (amqp://guest:guest@127.0.0.1:5672/).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Context, Row, db_name, redis_db, row, skipped

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DB_NAME = db_name("queue")
BROKERS = {
    "redis": os.environ.get("BENCH_REDIS_URL", f"redis://127.0.0.1:6379/{redis_db(0, default=14)}"),
    "rabbitmq": os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
}
NOOP_KIND = "bench_noop"
START_TIMEOUT_S = 10.0
IDLE_S = 0.4  # the worker's quiet time before each send
WORKER_BOOT = (
    "import django; django.setup(); "
    "from bench.queue import declare; declare(); "
    "from django.core.management import call_command; "
    "import sys; call_command('orchard_worker', *sys.argv[1:])"
)


# --- what both processes declare ------------------------------------------------------------


def _noop(ctx) -> dict:
    return {}


def _ping(token: str, path: str) -> None:
    started = time.time()
    with open(path, "a") as fh:
        fh.write(f"{token} {started!r}\n")


def declare():
    """Register the no-op task kind and declare the bare actor on the configured broker."""
    import dramatiq

    from apps.tasks import registry

    registry.register(NOOP_KIND, _noop, time_limit_s=60, max_attempts=1)
    return dramatiq.actor(_ping, actor_name="bench_ping", queue_name="cpu", max_retries=0)


# --- the probe (child process, one broker) -----------------------------------------------------


def _wait_line(path: Path, text: str, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"worker did not start: {path.read_text(errors='replace')[-3000:]}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def probe(broker_name: str, count: int) -> dict:
    """Measure `count` task starts and `count` bare actor starts; print the result as JSON."""
    import django

    django.setup()
    import dramatiq
    from django.core.management import call_command
    from django.db import connection, transaction

    from apps.accounts.models import User
    from apps.accounts.services import project_create
    from apps.tasks.models import Task
    from apps.tasks.services import task_create

    call_command("migrate", verbosity=0)
    ping = declare()
    broker = dramatiq.get_broker()
    if broker_name == "redis":
        broker.flush_all()  # a Redis database of the bench's own
    owner = User.objects.create_user(f"bench-queue-{time.time_ns()}", password="x" * 12)
    project = project_create(actor=owner, name=f"bench-queue-{time.time_ns()}")

    tmp = Path(tempfile.mkdtemp(prefix="orchard-bench-queue-"))
    pings, log = tmp / "pings.txt", tmp / "worker.log"
    pings.touch()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER_BOOT, "--queue", "cpu"],
        cwd=ROOT,
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    seen: dict[str, float] = {}
    offset = {"at": 0}

    def ping_started(token: str) -> float | None:
        with open(pings) as fh:
            fh.seek(offset["at"])
            for line in fh:
                if line.endswith("\n"):
                    key, value = line.split()
                    seen[key] = float(value)
                    offset["at"] += len(line)
        return seen.get(token)

    def orchard_once(i: int) -> float | None:
        marks: list[float] = []
        with transaction.atomic():
            transaction.on_commit(lambda: marks.append(time.time()))  # runs before the send
            task = task_create(project=project, actor=owner, kind=NOOP_KIND, name=f"noop-{i}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            state, started = Task.objects.filter(pk=task.pk).values_list("state", "started_at")[0]
            if started is not None and state in ("finished", "failed", "aborted"):
                return started.timestamp() - marks[0]
            time.sleep(0.005)
        return None

    def bare_once(i: int) -> float | None:
        token = f"p{i}-{time.time_ns()}"
        sent = time.time()
        ping.send(token, str(pings))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            started = ping_started(token)
            if started is not None:
                return started - sent
            time.sleep(0.002)
        return None

    try:
        _wait_line(log, "orchard worker: queue=cpu", 120, worker)
        for i in range(3):  # warm-up: connections, imports, the first claim
            orchard_once(-1 - i)
            bare_once(-1 - i)
        orchard, bare, lost = [], [], 0
        rng = random.Random(0)
        for i in range(count):
            for fn, out in ((orchard_once, orchard), (bare_once, bare)):
                # Idle: dramatiq's Redis consumer backs off 5 -> 10 -> ... -> 50-100 ms between
                # polls after its last message; 0.4 s puts every send in that steady state.
                time.sleep(IDLE_S + rng.uniform(0.0, 0.1))
                value = fn(i)
                if value is None:
                    lost += 1
                else:
                    out.append(value)
        if lost > max(2, count // 10):
            raise RuntimeError(f"{lost} of {2 * count} messages did not start in time")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        connection.close()
    return {
        "orchard": orchard,
        "bare": bare,
        "lost": lost,
        "broker": type(broker).__name__,
        "database": connection.vendor,
    }


# --- the rows (parent process) -----------------------------------------------------------------


def _postgres_ready() -> str | None:
    """Recreate the bench database; None when PostgreSQL answers, else the reason."""
    try:
        import psycopg

        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True, connect_timeout=2) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (DB_NAME,),
            )
            conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
            conn.execute(f"CREATE DATABASE {DB_NAME}")
    except Exception as exc:
        return f"PostgreSQL at {PG_URL} unreachable ({type(exc).__name__}: {exc!s:.120})"
    return None


def _broker_ready(name: str, url: str) -> str | None:
    try:
        if name == "redis":
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
        else:
            import logging

            import pika

            logging.getLogger("pika").setLevel(logging.WARNING)
            params = pika.URLParameters(url)
            params.socket_timeout = params.blocked_connection_timeout = 2
            params.connection_attempts = 1
            pika.BlockingConnection(params).close()
    except Exception as exc:
        return f"{name} at {url} unreachable ({type(exc).__name__}: {exc!s:.120})"
    return None


def _latency_rows(ctx: Context, name: str) -> list[Row]:
    url = BROKERS[name]
    metric = "enqueue -> start p50"
    reason = _postgres_ready() or _broker_ready(name, url)
    if reason:
        return [skipped(f"queue.latency_{name}", metric, reason, unit="ms")]
    count = 10 if ctx.quick else 100
    env = {
        **os.environ,
        # Team mode's settings (the psycopg pool included: the test settings open a fresh
        # PostgreSQL connection for every message, which no deployment does).
        "DJANGO_SETTINGS_MODULE": "config.settings.prod",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "localhost",
        "DATABASE_URL": f"{PG_URL}/{DB_NAME}",
        "BROKER_URL": url,
        "INPROCESS_WORKER": "false",
        "ORCHARD_DATA_DIR": tempfile.mkdtemp(prefix="orchard-bench-queue-data-"),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.queue", "probe", name, str(count)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"queue probe ({name}) failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    orchard = [v * 1e3 for v in result["orchard"]]
    bare = [v * 1e3 for v in result["bare"]]
    where = f"orchard_worker process, {result['broker']}, {result['database']}"
    extra = {"orchard_ms": orchard, "bare_ms": bare, "lost": result["lost"], "url": url}
    return [
        Row(
            f"queue.latency_{name}",
            f"{metric}, {len(orchard)} tasks",
            statistics.median(orchard),
            statistics.median(bare),
            "ms",
            goal="p50 <= 20 ms",
            notes=f"task commit -> Task.started_at vs bare actor send -> start, the broker's "
            f"floor ({where})",
            extra=extra,
        ),
        Row(
            f"queue.latency_{name}.p95",
            "enqueue -> start p95",
            _percentile(orchard, 0.95),
            _percentile(bare, 0.95),
            "ms",
            goal="p95 <= 100 ms",
        ),
    ]


@row("queue.latency_redis")
def latency_redis(ctx: Context) -> list[Row]:
    return _latency_rows(ctx, "redis")


@row("queue.latency_rabbitmq")
def latency_rabbitmq(ctx: Context) -> list[Row]:
    return _latency_rows(ctx, "rabbitmq")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "probe":
        print(json.dumps(probe(sys.argv[2], int(sys.argv[3]))), flush=True)
    else:
        sys.exit("usage: python -m bench.queue probe redis|rabbitmq COUNT")
