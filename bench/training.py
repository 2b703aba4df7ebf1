"""Training: Orchard's training loop (`ml.training.fit`) on the 784-400-10 template versus a plain
torch loop over the same tensors, epochs, batch size and device. Goal: ratio <= 1.05."""

import time

import torch
from torch import nn

from bench.harness import Context, Row, row
from ml.networks import build_network
from ml.templates import parse_template
from ml.training import TrainConfig, fit

TEMPLATE = """version: 1
bricks:
    1,1,1
        input: test_input
        number_of_neurons: 784
    2,1,1
        number_of_neurons: 400
    3,1,1
        output: test_output
        number_of_neurons: 10
"""


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
