"""Events of studio runs.

- events.logging: the studio's per-run reporting (`RunReporter`: a stored + published `epoch_end`
  event per epoch, progress polls every 16 batches with throttled publishing, all stored and
  published by the run's event thread, flushed at the end) around `ml.training.fit`, versus the
  same `fit` without callbacks, same data and seed. Goal: ratio <= 1.02.
- events.sse_latency: emit -> receive p95 of run events through the real ASGI app
  (`config.asgi.application`, the SSE route, JWT, tenancy) with the configured channel layer
  (in-memory by default, Redis with CHANNEL_LAYER=redis). Each emit is `TaskContext.record` (the
  TaskEvent row and the group publish); the baseline receives the same emits straight from the
  channel layer. Goal: p95 < 250 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from bench import django_env
from bench.harness import Context, Row, row


def _fixtures():
    """A user, project, experiment, run and its task in the bench database; (ctx, run, token)."""
    from apps.accounts.models import User
    from apps.accounts.services import project_create, token_pair_for
    from apps.tasks import registry
    from apps.tasks.context import TaskContext
    from apps.tasks.models import Task
    from apps.training.models import Experiment, Run
    from apps.training.services import TRAIN_KIND

    user = User.objects.create_user(f"bench-events-{time.monotonic_ns()}", password="x" * 12)
    project = project_create(actor=user, name="bench events")
    experiment = Experiment.objects.create(project=project, owner=user, name="bench")
    task = Task.objects.create(project=project, owner=user, kind=TRAIN_KIND, name="bench")
    run = Run.objects.create(project=project, owner=user, experiment=experiment, task=task)
    ctx = TaskContext(task, registry.get(TRAIN_KIND))
    return ctx, run, token_pair_for(user=user, project=project)["access"]


@row("events.logging")
def logging_overhead(ctx: Context) -> list[Row]:
    django_env.setup()
    import torch

    from apps.training.reporting import RunReporter
    from ml.architectures import build_architecture
    from ml.training import FitCallbacks, TrainConfig, fit

    class _Logged(FitCallbacks):
        """The studio's reporting hooks, as a run wires them."""

        def __init__(self, reporter: RunReporter) -> None:
            self.reporter = reporter

        def on_epoch_end(self, result) -> None:
            self.reporter.on_epoch_end(result)

        def should_stop(self) -> bool:
            return self.reporter.should_stop()

    device = "cuda" if ctx.device == "cuda" else "cpu"
    n = 4_000 if ctx.quick else 20_000
    epochs = 3 if ctx.quick else 5
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 784, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    task_ctx, run, _token = _fixtures()
    config = TrainConfig(epochs=epochs, batch_size=64, device=device, seed=0)

    def once(logging: bool) -> float:
        model = build_architecture("mlp", input_shape=(784,), num_classes=10, seed=0)
        callbacks, reporter = None, None
        if logging:
            reporter = RunReporter(
                task_ctx,
                run_id=run.pk,
                epochs=epochs,
                batches=(n + 63) // 64,
                stop_every=config.stop_check_every,
            )
            callbacks = _Logged(reporter)
        start = time.perf_counter()
        fit(model, x, y, config, callbacks=callbacks)
        if reporter is not None:
            reporter.close()  # everything stored and published
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once(False)  # warm-up
    plain, logged = [], []
    for _ in range(max(3, ctx.repeats)):  # interleaved so drift hits both sides alike
        plain.append(once(False))
        logged.append(once(True))
    return [
        Row(
            "events.logging",
            f"mlp 784-256-10, {n} samples, {epochs} epochs ({device})",
            statistics.median(logged),
            statistics.median(plain),
            "s",
            goal="<= 1.02",
            notes="fit + per-epoch stored/published events + throttled progress vs bare fit",
        )
    ]


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


async def _sse_latencies(task_ctx, run, token, count: int) -> tuple[list[float], list[float]]:
    import json

    from asgiref.sync import sync_to_async
    from asgiref.testing import ApplicationCommunicator
    from channels.layers import (
        DEFAULT_CHANNEL_LAYER,
        InMemoryChannelLayer,
        channel_layers,
        get_channel_layer,
    )

    from apps.core.events import group_name
    from config.asgi import application

    # Bounded like every wait here (CI once hung in this row).
    emit = sync_to_async(task_ctx.record)

    async def record(kind: str, data: dict) -> None:
        await asyncio.wait_for(emit(kind, data), 30)

    path = f"/api/training/{run.project_id}/runs/{run.pk}/stream"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"accept", b"text/event-stream"),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    comm = ApplicationCommunicator(application, scope)
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await comm.receive_output(30)
    if start.get("status") != 200:
        raise RuntimeError(f"stream answered {start}")
    buffer = ""

    async def next_data() -> dict:
        nonlocal buffer
        while True:
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                for line in block.split("\n"):
                    if line.startswith("data: "):
                        return json.loads(line[6:])
            message = await comm.receive_output(30)
            buffer += message.get("body", b"").decode()

    await next_data()  # the initial status
    sse = []
    for i in range(count):
        sent = time.perf_counter()
        await record("epoch_end", {"epoch": i + 1, "loss": 1.0, "accuracy": 0.5})
        while (await next_data()).get("epoch") != i + 1:
            pass
        sse.append(time.perf_counter() - sent)
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait(10)

    # Baseline: the same emits, received straight from a channel layer of its own (not the instance
    # the stream's consumer received on: its cancelled receive must not decide the baseline).
    layer = get_channel_layer()
    if not isinstance(layer, InMemoryChannelLayer):  # in memory, only the shared instance hears
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    channel = await layer.new_channel()
    group = group_name("task", task_ctx.task.pk)
    await layer.group_add(group, channel)
    raw = []
    for i in range(count):
        sent = time.perf_counter()
        await record("epoch_end", {"epoch": count + i + 1, "loss": 1.0, "accuracy": 0.5})
        while (await asyncio.wait_for(layer.receive(channel), 30))["event"].get(
            "epoch"
        ) != count + i + 1:
            pass
        raw.append(time.perf_counter() - sent)
    await layer.group_discard(group, channel)
    if hasattr(layer, "close_pools"):  # Redis: this loop's connections, closed before it ends
        await layer.close_pools()
    return sse, raw


@row("events.sse_latency")
def sse_latency(ctx: Context) -> list[Row]:
    vendor = django_env.setup()
    from django.conf import settings

    task_ctx, run, token = _fixtures()
    count = 30 if ctx.quick else 300
    sse, raw = asyncio.run(_sse_latencies(task_ctx, run, token, count))
    layer = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]
    return [
        Row(
            "events.sse_latency",
            f"emit->SSE p95, {count} events, {layer}",
            _p95(sse) * 1e3,
            _p95(raw) * 1e3,
            "ms",
            goal="< 250 ms",
            notes=f"baseline: same emits read from the channel layer; {vendor}; "
            f"median SSE {statistics.median(sse) * 1e3:.2f} ms",
        )
    ]
