"""Template texts and data types shared by the ml/ tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED_TEMPLATE = """version: 1
settings:
    neuron_cooldown: 100000000000.0
    refractory_time: 1
    max_connection_distance: 1
    enable_reduction: false
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
