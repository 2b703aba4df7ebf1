"""Training: Orchard's training loop (`ml.training.fit`) on the 784-400-10 template versus a plain
torch loop over the same tensors, epochs, batch size and device (row `training.fit`), and a whole
train task of that template through the job engine, from the worker's claim of the task row
(`Task.started_at`) to its terminal state (`finished_at`), versus the same plain loop (row
`train_task.784_400_10`). Goal for both: ratio <= 1.05."""

import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench import django_env
from bench.harness import Context, Row, row
from ml.networks import build_network
from ml.templates import MNIST_784_400_10, parse_template
from ml.training import TrainConfig, fit

TEMPLATE = MNIST_784_400_10


def _data(n: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 784, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x.to(device), y.to(device)


def _plain_loop(model, x, y, *, epochs, batch_size, lr, device):
    """What a user would write by hand: randperm, slice, Adam, cross entropy."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], device=device, generator=None)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


@row("training")
def training(ctx: Context) -> list[Row]:
    device = torch.device("cuda" if ctx.device == "cuda" else "cpu")
    n = 6_000 if ctx.quick else 60_000
    epochs, batch_size, lr = 1, 64, 1e-3
    x, y = _data(n, device)
    template = parse_template(TEMPLATE)

    def run_plain():
        model = build_network(template, seed=0).to(device)
        start = time.perf_counter()
        _plain_loop(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, device=device)
        return time.perf_counter() - start

    def run_orchard():
        model = build_network(template, seed=0).to(device)
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=lr,
            optimizer="adam",
            device=str(device),
            seed=0,
        )
        start = time.perf_counter()
        fit(model, x, y, config)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run_plain()  # warm-up (allocator, kernels)
    plain, orchard = [], []
    for _ in range(ctx.repeats):  # interleave so drift hits both sides alike
        plain.append(run_plain())
        orchard.append(run_orchard())
    plain.sort()
    orchard.sort()
    mid = len(plain) // 2
    return [
        Row(
            "training.fit",
            f"784-400-10, {n} samples, {epochs} epoch ({device.type})",
            orchard[mid],
            plain[mid],
            "s",
            goal="<= 1.05",
            notes="ml.training.fit vs a hand-written loop; the task-engine row adds the worker.",
        )
    ]


# --- a train task through the job engine ---------------------------------------------------------


def write_mnist(directory: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Raw MNIST idx files of n random 28x28 uint8 images and n labels in 0..9."""
    import numpy as np

    from apps.datasets.idx import write_idx

    rng = np.random.default_rng(seed)
    images, labels = directory / "train-images-idx3-ubyte", directory / "train-labels-idx1-ubyte"
    write_idx(images, rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
    write_idx(labels, rng.integers(0, 10, size=n, dtype=np.uint8))
    return images, labels


_mnist_files = write_mnist  # the name bench/marketplace.py imports


def _wait_terminal(task_id, timeout_s: float):
    from apps.tasks.models import TERMINAL_STATES, Task

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = Task.objects.get(pk=task_id)
        if task.state in TERMINAL_STATES:
            return task
        time.sleep(0.05)
    raise TimeoutError(f"task {task_id} did not finish within {timeout_s} s")


def discard_dataset(dataset) -> None:
    """Delete the bench dataset; its files at least, should the row delete fail."""
    import shutil

    from apps.datasets.services import dataset_delete

    try:
        dataset_delete(dataset=dataset)
    except Exception as exc:  # the bench database is throwaway; the disk space is not
        print(f"    (could not delete the bench dataset row: {exc!s:.200})")
        shutil.rmtree(dataset.storage_dir, ignore_errors=True)


@row("train_task")
def train_task(ctx: Context) -> list[Row]:
    """A `train` task of the 784-400-10 template on 60,000 MNIST-shaped samples, run by a real
    Dramatiq worker (in-process, on the configured broker: the stub broker unless BROKER_URL is
    set) against the bench database, timed by the task row itself."""
    vendor = django_env.setup()
    import dramatiq

    from apps.accounts.models import User
    from apps.accounts.services import project_create
    from apps.clusters.services import cluster_create, cluster_task_create
    from apps.datasets.imports import dataset_import_mnist
    from apps.datasets.selectors import dataset_arrays

    if ctx.device == "cuda":
        from apps.clusters.models import Host
        from apps.clusters.services import host_refresh

        host_refresh()
        host = Host.objects.filter(pk="gpu-0").first()
        if host is None:
            raise RuntimeError("no gpu-0 host although CUDA is available")
    device = torch.device("cuda" if ctx.device == "cuda" else "cpu")
    n = 2_000 if ctx.quick else 60_000
    # Three epochs: a real job runs several (the task default is 20), so the task's fixed costs
    # (loading the dataset, storing the weights: see the notes) weigh as they would in use.
    epochs, batch_size, lr = (1 if ctx.quick else 3), 64, 1e-3
    params = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": lr,
        "optimizer": "adam",
        "seed": 0,
    }

    owner = User.objects.create_user(f"bench-train-{time.time_ns()}", password="x" * 12)
    project = project_create(actor=owner, name=f"bench-train-{time.time_ns()}")
    with tempfile.TemporaryDirectory(prefix="orchard-bench-mnist-") as tmp:
        images, labels = write_mnist(Path(tmp), n)
        dataset = dataset_import_mnist(
            project=project, actor=owner, name="mnist-60k", images=images, labels=labels
        )
    x_np, y_np = dataset_arrays(dataset, mmap=False)
    x = torch.from_numpy(x_np).to(device)
    y = torch.from_numpy(y_np).to(device)
    template = parse_template(TEMPLATE)

    broker = dramatiq.get_broker()
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    counter = {"i": 0}
    fit_s: list[float] = []  # the epochs' own seconds inside each task (ml.training.fit)

    def run_task() -> float:
        counter["i"] += 1
        cluster = cluster_create(
            project=project, actor=owner, name=f"net-{counter['i']}", template_text=TEMPLATE, seed=0
        )
        if device.type == "cuda":
            cluster.host_id = "gpu-0"
            cluster.save(update_fields=["host"])
        task = cluster_task_create(
            project=project,
            actor=owner,
            kind="train",
            name=f"fit-{counter['i']}",
            cluster=cluster,
            dataset=dataset,
            params=params,
        )
        done = _wait_terminal(task.pk, timeout_s=3600)
        if done.state != "finished":
            raise RuntimeError(f"train task {done.state}: {done.error}")
        fit_s.append(sum(epoch["seconds"] for epoch in done.result["history"]))
        return (done.finished_at - done.started_at).total_seconds()

    def run_plain() -> float:
        model = build_network(template, seed=0).to(device)
        start = time.perf_counter()
        _plain_loop(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, device=device)
        return time.perf_counter() - start

    try:
        run_plain()  # warm-up (allocator, kernels)
        plain, orchard = [], []
        for _ in range(ctx.repeats):  # interleaved so drift hits both sides alike
            plain.append(run_plain())
            orchard.append(run_task())
    finally:
        worker.stop()
        discard_dataset(dataset)
    broker_name = type(broker).__name__
    task_s, plain_s = statistics.median(orchard), statistics.median(plain)
    overhead = statistics.median(t - f for t, f in zip(orchard, fit_s, strict=True))
    return [
        Row(
            "train_task.784_400_10",
            f"{n} samples, {epochs} ep, bs {batch_size} ({device.type})",
            task_s,
            plain_s,
            "s",
            goal="<= 1.05",
            notes=(
                f"train task started_at -> finished_at (Dramatiq worker in-process on "
                f"{broker_name}, {vendor}) vs a hand-written loop on tensors already in memory; "
                f"outside the epochs: {overhead:.3f} s (load, checkpoint, weights); "
                f"best-of ratio {min(orchard) / min(plain):.3f}"
            ),
            extra={
                "broker": broker_name,
                "database": vendor,
                "orchard_all": orchard,
                "baseline_all": plain,
                "fit_epochs_all": fit_s,
                "overhead_s": overhead,
            },
        )
    ]
