"""Team mode as deployed (`bench.deployment.team`: daphne + two `orchard_worker` processes on
PostgreSQL and Redis or RabbitMQ, prod settings), measured over HTTP and websockets only.

- deployed.<broker>.start: enqueue -> start (Task.queued_at -> started_at, the database's own
  clock) of request tasks submitted one at a time to idle workers, p50 and p99. Goal p50 <= 20 ms.
- deployed.<broker>.tasks_per_s: N request tasks (digits-test, 360 samples each) across 5 clusters
  submitted at once, from the first queued to the last finished; the baseline is the same N
  forward passes in this process (the work without the platform), as time per task.
- deployed.redis.ws_rate: events published to a task's group on the deployment's Redis channel
  layer from this process, received by a websocket client through daphne, per message; baseline:
  the same messages sent and received on the Redis layer directly (no server, no socket).
- deployed.redis.db_connections: most PostgreSQL connections the deployment held while 50
  clients listed datasets at once, against one client doing the same (bounded: at most one per
  request in flight, CONN_MAX_AGE=0).
- deployed.redis.directio_p50 / _p99, deployed.redis.io_binary / io_json / io_binary_x4: direct
  io on the Hanami socket and on the main-API io socket through the deployed daphne (the Redis
  channel layer), measured as `bench.directio` measures embedded mode, beside its figures.

Settable: BENCH_PG_URL (server), BENCH_REDIS_URL (server), BENCH_DEPLOYED_REDIS_DB (first of two
numbers, default 10), BENCH_AMQP_URL; the database is `orchard_bench_deployed_<pid>`, dropped at
the end.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from bench.harness import Context, Row, db_name, redis_db, row, skipped
from ml.templates import DIGITS_64_128_10

PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
REDIS_DB = int(os.environ.get("BENCH_DEPLOYED_REDIS_DB") or redis_db(1, default=10))
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _demo(dep) -> tuple[str, dict]:
    projects = dep.ok(dep.get("/api/projects"))  # the plan's list
    project = next(p for p in projects if p["name"].lower() == "demo")["id"]
    datasets = dep.ok(dep.get(f"/api/projects/{project}/datasets"))["items"]
    return project, {d["name"]: d["id"] for d in datasets}


def _submit(dep, project, cluster, dataset) -> str:
    body = {"name": "bench", "kind": "request", "cluster_id": cluster, "dataset_id": dataset}
    return dep.ok(dep.post(f"/api/projects/{project}/tasks", body), 201)["id"]


def _wait_all(dep, project, ids: list[str], timeout: float = 600) -> list[dict]:
    from bench.deployment import wait_until

    pending, done = set(ids), {}

    def check():
        for task_id in list(pending):
            task = dep.ok(dep.get(f"/api/projects/{project}/tasks/{task_id}"))
            if task["state"] in ("finished", "failed", "aborted"):
                done[task_id] = task
                pending.discard(task_id)
        return not pending

    wait_until(check, timeout=timeout, what="the bench tasks", interval=0.05)
    failed = [t for t in done.values() if t["state"] != "finished"]
    if failed:
        raise RuntimeError(f"{len(failed)} bench tasks did not finish: {failed[0]['error']}")
    return [done[i] for i in ids]


def _plain_forward_s(count: int) -> float:
    """The work of `count` request tasks without the platform: a 64-128-10 network's forward pass
    over the 360 test digits, `count` times, in this process (one torch thread, like a worker)."""
    import torch
    from sklearn.datasets import load_digits

    images = load_digits().images[:360]  # as many samples as digits-test
    x = torch.from_numpy(images.reshape(len(images), -1).astype("float32") / 16)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(count):
            net(x).softmax(dim=1).numpy()
    return (time.perf_counter() - start) / count


def _queue_rows(dep, name: str, quick: bool) -> list[Row]:
    project, datasets = _demo(dep)
    clusters = [
        dep.ok(
            dep.post(
                f"/api/projects/{project}/clusters", {"name": f"b{i}", "template": DIGITS_64_128_10}
            ),
            201,
        )["id"]
        for i in range(5)
    ]
    test_set = datasets["digits-test"]
    # Idle start latency: one task at a time, each after the previous finished.
    starts = []
    for i in range(8 if quick else 40):
        (task,) = _wait_all(dep, project, [_submit(dep, project, clusters[i % 5], test_set)])
        starts.append((_ts(task["started_at"]) - _ts(task["queued_at"])) * 1e3)
    # Throughput: N at once across the clusters.
    count = 20 if quick else 200
    ids = [_submit(dep, project, clusters[i % 5], test_set) for i in range(count)]
    tasks = _wait_all(dep, project, ids)
    first = min(_ts(t["queued_at"]) for t in tasks)
    last = max(_ts(t["finished_at"]) for t in tasks)
    per_task_s = (last - first) / count
    burst_starts = [(_ts(t["started_at"]) - _ts(t["queued_at"])) * 1e3 for t in tasks]
    plain_s = _plain_forward_s(count)
    where = f"team mode, {name} broker, 2 orchard_worker processes, PostgreSQL"
    return [
        Row(
            f"deployed.{name}.start",
            f"enqueue -> start p50, idle workers, {len(starts)} tasks",
            statistics.median(starts),
            None,
            "ms",
            goal="<= 20 ms",
            notes=f"p99 {_pct(starts, 0.99):.1f} ms ({where})",
            extra={"starts_ms": starts},
        ),
        Row(
            f"deployed.{name}.tasks_per_s",
            f"{count} request tasks over 5 clusters, s per task",
            per_task_s,
            plain_s,
            "s",
            goal="<= 0.1 s per task",
            notes=(
                f"{1 / per_task_s:.1f} tasks/s; enqueue -> start under load p50 "
                f"{statistics.median(burst_starts):.0f} ms, p99 {_pct(burst_starts, 0.99):.0f} ms; "
                "baseline: the same forward passes in-process"
            ),
            extra={"burst_starts_ms": burst_starts},
        ),
    ]


def _ws_rate_row(dep, quick: bool) -> Row:
    import json

    import websockets
    from channels_redis.core import RedisChannelLayer

    project, datasets = _demo(dep)
    cluster = dep.ok(
        dep.post(f"/api/projects/{project}/clusters", {"name": "ws", "template": DIGITS_64_128_10}),
        201,
    )["id"]
    (task,) = _wait_all(dep, project, [_submit(dep, project, cluster, datasets["digits-test"])])
    count = 200 if quick else 800  # below the layer's per-channel capacity (1000)
    layer = RedisChannelLayer(hosts=[dep.env["REDIS_URL"]], capacity=1000)

    async def through_socket() -> float:
        url = dep.ws_url(f"/ws/projects/{project}/tasks/{task['id']}")
        async with websockets.connect(url, open_timeout=60, max_size=None) as ws:
            assert json.loads(await ws.recv())["type"] == "state"
            while True:  # the stored events replay first: drain them
                try:
                    await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    break
            group = f"task.{task['id']}"  # apps.core.events.group_name("task", id)
            start = time.perf_counter()
            for i in range(count):
                await layer.group_send(
                    group, {"type": "orchard.event", "event": {"type": "bench", "i": i}}
                )
            for _ in range(count):
                await asyncio.wait_for(ws.recv(), 30)
            return (time.perf_counter() - start) / count

    async def layer_only() -> float:
        channel = await layer.new_channel()
        start = time.perf_counter()
        for i in range(count):
            await layer.send(channel, {"type": "bench", "i": i})
        for _ in range(count):
            await asyncio.wait_for(layer.receive(channel), 30)
        return (time.perf_counter() - start) / count

    socket_s = asyncio.run(through_socket())
    layer_s = asyncio.run(layer_only())
    return Row(
        "deployed.redis.ws_rate",
        f"{count} events to a task websocket, ms each",
        socket_s * 1e3,
        layer_s * 1e3,
        "ms",
        goal="<= 2",
        notes=(
            f"{1 / socket_s:.0f} msg/s through daphne + the Redis layer; baseline: the same "
            "messages on the Redis layer alone"
        ),
    )


def _connections_row(dep, quick: bool) -> Row:
    import psycopg
    import requests

    project, _ = _demo(dep)
    db = dep.env["DATABASE_URL"].rsplit("/", 1)[1]
    seconds = 2.0 if quick else 8.0

    def max_connections(clients: int) -> tuple[int, int]:
        stop = threading.Event()
        answers = []
        peak = [0]

        def client():
            with requests.Session() as session:
                while not stop.is_set():
                    r = session.get(
                        dep.url(f"/api/projects/{project}/datasets"),
                        headers=dep.headers(),
                        timeout=60,
                    )
                    answers.append(r.status_code)

        def sampler():
            with psycopg.connect(PG_URL + "/postgres", autocommit=True) as conn:
                while not stop.is_set():
                    count = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,)
                    ).fetchone()[0]
                    peak[0] = max(peak[0], count)
                    stop.wait(0.02)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        threads.append(threading.Thread(target=sampler))
        for thread in threads:
            thread.start()
        stop.wait(seconds)
        stop.set()
        for thread in threads:
            thread.join(120)
        errors = sum(1 for status in answers if status >= 500)
        return peak[0], errors

    one, _ = max_connections(1)
    fifty, errors = max_connections(50)
    return Row(
        "deployed.redis.db_connections",
        "most PostgreSQL connections, 50 clients",
        float(fifty),
        float(one),
        "",
        goal="bounded",
        notes=f"baseline: 1 client; {errors} answers >= 500 under 50 clients (includes workers)",
    )


def _directio_rows(dep, quick: bool) -> list[Row]:
    """Direct io on both sockets through the deployed daphne (Redis channel layer, prod
    settings): the Hanami socket's round trip and the main-API io socket's rates, measured as
    `bench.directio` measures them in embedded mode; baseline: the bare forward pass in this
    process on one torch thread (the deployment runs with OMP_NUM_THREADS=1)."""
    from bench.deployment import ADMIN_PASSWORD
    from bench.directio import direct_cluster, forward_seconds, socket_figures

    n = 200 if quick else 3000
    token, cluster = direct_cluster(dep.base, ADMIN_PASSWORD)
    trips, io = socket_figures(dep.base, token, cluster, ADMIN_PASSWORD, n)
    forward = forward_seconds(n, threads=1)
    where = "team mode, daphne with the Redis channel layer, prod settings"
    bare_rate = 1.0 / statistics.mean(forward)
    rows = []
    for q in (0.5, 0.99):
        trip, bare = _pct(trips, q) * 1e3, _pct(forward, q) * 1e3
        rows.append(
            Row(
                f"deployed.redis.directio_p{round(q * 100)}",
                f"Hanami socket round trip / bare forward (p{round(q * 100)})",
                trip,
                bare,
                "ms",
                goal="overhead <= 1.5 ms" if q == 0.5 else "round trip < 10 ms",
                notes=f"overhead {trip - bare:.3f} ms; {n} sequential REQUEST messages, "
                f"784-400-10 ({where})",
                extra={"overhead_ms": trip - bare},
            )
        )
    for kind, goal in (("binary", ">= 2000 msg/s"), ("json", ">= 1000 msg/s")):
        rows.append(
            Row(
                f"deployed.redis.io_{kind}",
                f"main-API io socket, {kind} frames, msg/s / bare forwards/s",
                io[kind],
                bare_rate,
                "msg/s",
                goal=goal,
                notes=f"{n} sequential one-sample requests on ws/projects/.../io ({where})",
            )
        )
    rows.append(
        Row(
            "deployed.redis.io_binary_x4",
            "4 io sockets at once, binary frames, total msg/s / one socket's",
            io["binary_x4"],
            io["binary"],
            "msg/s",
            goal="scales with sockets",
            notes=f"the same one-sample requests spread over 4 concurrent connections ({where})",
        )
    )
    return rows


def _rows(ctx: Context, broker: str) -> list[Row]:
    from bench.deployment import amqp_unreachable, shared_team_setup, team, unreachable

    metric = "enqueue -> start p50"
    reason = unreachable(PG_URL, REDIS_URL)
    if not reason and broker == "amqp":
        reason = amqp_unreachable(AMQP_URL)
    name = "rabbitmq" if broker == "amqp" else "redis"
    if reason:
        return [skipped(f"deployed.{name}", metric, reason, unit="ms")]
    with tempfile.TemporaryDirectory(prefix="orchard-bench-deployed-") as tmp:
        with team(
            workdir=Path(tmp),
            pg_server=PG_URL,
            redis_server=REDIS_URL,
            first_redis_db=REDIS_DB,
            broker=broker,
            amqp_url=AMQP_URL,
            db_name=db_name(f"deployed_{os.getpid()}"),
            extra_env={"LOGIN_THROTTLE_RATE": "1000/min", "OMP_NUM_THREADS": "1"},
            reuse=shared_team_setup(),
        ) as dep:
            rows = _queue_rows(dep, name, ctx.quick)
            if broker == "redis":
                rows.append(_ws_rate_row(dep, ctx.quick))
                rows.append(_connections_row(dep, ctx.quick))
                rows.extend(_directio_rows(dep, ctx.quick))
    return rows


@row("deployed.redis")
def deployed_redis(ctx: Context) -> list[Row]:
    return _rows(ctx, "redis")


@row("deployed.rabbitmq")
def deployed_rabbitmq(ctx: Context) -> list[Row]:
    return _rows(ctx, "amqp")
