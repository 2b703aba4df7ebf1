"""Template texts and data types shared by the ml/ tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.templates import MNIST_784_400_10
from ml.training import EpochResult, FitCallbacks

# The seed template, 784 -> 400 -> 10 (one text for ml/, the tests and bench/).
SEED_TEMPLATE = MNIST_784_400_10

DIGITS_TEMPLATE = """version: 1
bricks:
    1,1,1
        input: pixels
        number_of_neurons: 64
    2,1,1
        number_of_neurons: 128
    3,1,1
        output: digit
        number_of_neurons: 10
"""

MULTI_TEMPLATE = """version: 1
bricks:
    1,1,1
        input: a
        number_of_neurons: 4
    1,2,1
        input: b
        number_of_neurons: 3
    2,1,1
        number_of_neurons: 8
    3,1,1
        output: y
        number_of_neurons: 2
    3,2,1
        output: z
        number_of_neurons: 5
"""


@dataclass(frozen=True)
class Digits:
    """load_digits scaled to 0..1, split 75/25 stratified."""

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


class Hooks(FitCallbacks):
    """`fit` callbacks from plain functions, for tests that need one or two of them."""

    def __init__(
        self,
        *,
        on_epoch_end: Callable[[EpochResult], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_checkpoint: Callable[[int, dict, dict], None] | None = None,
    ) -> None:
        self._on_epoch_end, self._should_stop = on_epoch_end, should_stop
        self._on_checkpoint = on_checkpoint

    def on_epoch_end(self, result: EpochResult) -> None:
        if self._on_epoch_end is not None:
            self._on_epoch_end(result)

    def should_stop(self) -> bool:
        return self._should_stop is not None and self._should_stop()

    def wants_checkpoint(self, epoch: int) -> bool:
        return self._on_checkpoint is not None

    def on_checkpoint(self, epoch: int, model_state: dict, optimizer_state: dict[str, Any]) -> None:
        if self._on_checkpoint is not None:
            self._on_checkpoint(epoch, model_state, optimizer_state)
