"""Template texts and data types shared by the ml/ tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.templates import MNIST_784_400_10

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
