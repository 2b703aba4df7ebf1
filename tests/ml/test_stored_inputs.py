"""Inputs kept in their stored dtype (`ml.data.StoredInputs`: uint8 pixels and their scale):
`fit` converts each batch, trains the very weights a float32 copy of the whole set trains, and
makes no float32 array the size of the set."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ml.augment import make_augment
from ml.data import StoredInputs
from ml.training import FitOptions, TrainConfig, evaluate, fit
from tests.ml.samples import Digits, Hooks

PIXEL = np.float32(1 / 255)


def _pixels(digits: Digits) -> tuple[np.ndarray, np.ndarray]:
    """The digits as uint8 images (1, 8, 8) with values 0..255, train and test."""
    return tuple(  # type: ignore[return-value]
        np.rint(x * 255).astype(np.uint8).reshape(len(x), 1, 8, 8)
        for x in (digits.x_train, digits.x_test)
    )


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(256, 10),
    )


def _float32_copy(x: np.ndarray, factors, mean=None, std=None) -> np.ndarray:
    """What the callers built before: the whole set converted, scaled and normalised in place."""
    out = np.asarray(x, dtype=np.float32)
    for factor in factors:
        out *= np.float32(factor)
    if mean is not None:
        out -= np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        out /= np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return out


def _run(x, y, x_val, y_val, config: TrainConfig, **options: Any):
    model = _model()
    result = fit(model, x, y, config, x_val=x_val, y_val=y_val, options=FitOptions(**options))
    history = [{**r.as_dict(), "seconds": 0} for r in result.history]
    return model, history


CASES = {
    "pixels": ({}, (1 / 255,), None),
    "scaled and normalised, early stopping": (
        {"early_stopping_patience": 1, "scheduler": "cosine"},
        (1 / 255, 0.7),
        ([0.25], [0.31]),
    ),
    "bf16-mixed": ({"precision": "bf16-mixed"}, (1 / 255,), ([0.5], [0.5])),
    "augmented": ({"optimizer": "sgd"}, (1 / 255,), None),
}


@pytest.mark.parametrize("case", CASES)
def test_uint8_inputs_train_the_weights_of_their_float32_copy(digits: Digits, case: str) -> None:
    extra, factors, norm = CASES[case]
    x, x_test = _pixels(digits)
    mean, std = norm if norm else (None, None)
    stored = StoredInputs(x, factors).normalized(mean, std)
    stored_val = StoredInputs(x_test, factors).normalized(mean, std)
    copy, copy_val = (_float32_copy(v, factors, mean, std) for v in (x, x_test))
    assert np.array_equal(stored.as_float32(), copy)
    config = {"epochs": 3, "batch_size": 64, "seed": 5, "eval_batch_size": 100, **extra}
    augment = (
        make_augment({"hflip": True, "shift": 0.1}, (1, 8, 8)) if case == "augmented" else None
    )

    a, history_a = _run(
        stored, digits.y_train, stored_val, digits.y_test, TrainConfig(**config), augment=augment
    )
    b, history_b = _run(
        copy, digits.y_train, copy_val, digits.y_test, TrainConfig(**config), augment=augment
    )

    assert history_a == history_b
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(wa, wb), name
    assert evaluate(a, stored_val, digits.y_test) == evaluate(a, copy_val, digits.y_test)


def test_a_resumed_uint8_run_gives_the_uninterrupted_weights(digits: Digits) -> None:
    x, _ = _pixels(digits)
    stored = StoredInputs(x, (1 / 255,))
    config = TrainConfig(epochs=3, batch_size=64, seed=2)
    whole = _model()
    fit(whole, stored, digits.y_train, config)
    saved: dict[int, tuple[dict, dict]] = {}
    part = _model()
    stopped = fit(
        part,
        stored,
        digits.y_train,
        config,
        callbacks=Hooks(
            on_checkpoint=lambda e, m, o: saved.__setitem__(e, (m, o)),
            should_stop=lambda: bool(saved),
        ),
    )
    assert stopped.stopped and stopped.epochs_completed == 1
    resumed = _model()
    resumed.load_state_dict(saved[1][0])
    fit(
        resumed,
        stored,
        digits.y_train,
        config,
        options=FitOptions(start_epoch=1, optimizer_state=saved[1][1]),
    )
    for wa, wb in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(wa, wb)


class LargestFloat32(TorchDispatchMode):
    """Counts, over every torch operation, the largest float32 tensor one produced."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_leaves(out):
            if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
                self.largest = max(self.largest, value.numel())
        return out


def _train_counting(x) -> tuple[int, int]:
    """(largest float32 tensor in elements, peak NumPy/Python bytes) of one epoch on `x`."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, len(x))
    config = TrainConfig(epochs=1, batch_size=50, eval_batch_size=200, seed=0)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        with LargestFloat32() as counter:
            fit(_model(), x, y, config, x_val=x, y_val=y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return counter.largest, peak - start


def test_no_float32_array_of_the_whole_set_is_made(tmp_path) -> None:
    n = 4000
    whole = n * 64  # elements of the set; float32: 4 bytes each
    pixels = np.random.default_rng(1).integers(0, 256, (n, 1, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "inputs.npy", pixels)
    mapped = np.load(tmp_path / "inputs.npy", mmap_mode="r")

    largest, peak = _train_counting(StoredInputs(mapped, (1 / 255,)))
    assert largest < whole / 4  # the batches (and the model's weights) only
    assert peak < whole  # not even a uint8 copy: the map is used as it is

    # The counters see the whole set when it is converted at once (as before).
    largest, peak = _train_counting(_float32_copy(mapped, (1 / 255,)))
    assert largest >= whole or peak >= 4 * whole
    largest, _ = _train_counting(np.array(mapped))  # plain uint8: converted whole by fit
    assert largest >= whole
