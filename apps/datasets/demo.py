"""The demo datasets of the embedded mode: scikit-learn's handwritten digits as MNIST idx files.

`create_demo_datasets` (an ORCHARD_DEMO_HOOKS entry run by `manage.py bootstrap`) writes the 1797
8x8 digits as uint8 idx files (0..16 scaled by 255/16), splits them stratified 1437/360 with a
fixed seed, and imports them through `dataset_import_mnist` as "digits-train" and "digits-test".
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from apps.datasets.idx import write_idx
from apps.datasets.imports import dataset_import_mnist
from apps.datasets.models import Dataset

DEMO_SEED = 0
DEMO_TEST_SIZE = 360


def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) as uint8 arrays."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=DEMO_TEST_SIZE, stratify=labels, random_state=DEMO_SEED
    )
    return x_train, y_train, x_test, y_test


def create_demo_datasets(*, project, actor, stdout=None) -> None:
    """Create "digits-train" and "digits-test" in `project` unless they already exist."""
    x_train, y_train, x_test, y_test = digits_arrays()
    with tempfile.TemporaryDirectory() as tmp:
        for name, images, labels in (
            ("digits-train", x_train, y_train),
            ("digits-test", x_test, y_test),
        ):
            if Dataset.objects.filter(project=project, name=name).exists():
                continue
            images_path, labels_path = Path(tmp) / f"{name}-images", Path(tmp) / f"{name}-labels"
            write_idx(images_path, images)
            write_idx(labels_path, labels)
            dataset = dataset_import_mnist(
                project=project, actor=actor, name=name, images=images_path, labels=labels_path
            )
            if stdout is not None:
                stdout.write(f"Created demo dataset {name} ({dataset.num_samples} samples).\n")
