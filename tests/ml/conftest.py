"""Fixtures of the ml/ tests: one torch thread (robust on a shared CPU), the digits split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.ml.samples import Digits


@pytest.fixture(scope="session", autouse=True)
def _cpu_threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> Digits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=0
    )
    return Digits(x_train, x_test, y_train.astype(np.int64), y_test.astype(np.int64))
