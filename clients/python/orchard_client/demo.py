"""scikit-learn's handwritten digits as MNIST idx files (the walkthrough's demo data)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file: magic (0, 0, dtype 0x08 = uint8, ndim), the dims big-endian, the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(header + array.tobytes())


def write_digits(folder: Path, *, test_fraction: float = 0.2, seed: int = 0) -> dict[str, Path]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover
        raise SystemExit("demo-digits needs scikit-learn (pip install scikit-learn)") from exc
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "train_images": folder / "train-images-idx3-ubyte",
        "train_labels": folder / "train-labels-idx1-ubyte",
        "test_images": folder / "test-images-idx3-ubyte",
        "test_labels": folder / "test-labels-idx1-ubyte",
    }
    write_idx(paths["train_images"], images[train])
    write_idx(paths["train_labels"], labels[train])
    write_idx(paths["test_images"], images[test])
    write_idx(paths["test_labels"], labels[test])
    return paths
