"""Sample arrays of an experiment: which dataset rows form its train / val / test subsets, and
the input size the network sees.

Image datasets keep one value per item and split (`DatasetItem.splits[index]`, items ordered by
filename like `dataset_arrays`); tensor datasets (MNIST, CSV) have no splits and are used whole, with
an optional second dataset for validation. Everything stays NumPy: one boolean mask per subset,
no Python loop over samples beyond reading the split column once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from apps.core.exceptions import ValidationFailed
from apps.datasets.models import Dataset, Split

if TYPE_CHECKING:
    from ml.data import StoredInputs

MAX_IMAGE_SIDE = 1024
SUBSETS = ("train", "val", "test", "all")


@dataclass
class Subset:
    """Rows of one dataset: inputs shaped `(n, *input_size)` (float32, or as stored for
    training: `load_subset(stored=True)`), class indices, row numbers."""

    x: np.ndarray | StoredInputs
    y: np.ndarray
    indices: np.ndarray


def is_image(dataset: Dataset) -> bool:
    return dataset.kind == Dataset.Kind.IMAGES


def sample_size(shape) -> int:
    return int(math.prod(int(v) for v in shape)) if shape else 0


def default_input_size(dataset: Dataset) -> list[int]:
    """The natural per-sample shape: images `[C, H, W]`, MNIST `[1, rows, cols]`, else as stored."""
    if dataset.kind == Dataset.Kind.MNIST:
        rows, cols = (dataset.metadata or {}).get("rows"), (dataset.metadata or {}).get("cols")
        if (
            isinstance(rows, int)
            and isinstance(cols, int)
            and rows * cols == sample_size(dataset.input_shape)
        ):
            return [1, rows, cols]
    return [int(v) for v in dataset.input_shape]


def check_classification(dataset: Dataset, field: str) -> None:
    """The dataset must be ready and hold one class label per sample."""
    if dataset.status != Dataset.Status.READY:
        raise ValidationFailed.for_field(field, f"the dataset is {dataset.status}, not ready.")
    if not dataset.num_classes or dataset.label_shape:
        raise ValidationFailed.for_field(
            field, "the dataset has no class label per sample (classification needs one)."
        )
    if dataset.num_samples < 1:
        raise ValidationFailed.for_field(field, "the dataset is empty.")


def check_input_size(dataset: Dataset, input_size: list[int] | None) -> list[int]:
    """The input size to use for `dataset` (its default when None), or VALIDATION_ERROR naming
    `input_size` when the data cannot be given that shape."""
    if input_size is None or list(input_size) == []:
        return default_input_size(dataset)
    size = [int(v) for v in input_size]
    if not 1 <= len(size) <= 3 or any(v < 1 for v in size):
        raise ValidationFailed.for_field("input_size", "must be 1 to 3 positive sizes.")
    if is_image(dataset):
        channels = int(dataset.input_shape[0]) if dataset.input_shape else 1
        if len(size) == 2:
            size = [channels, *size]
        if len(size) != 3:
            raise ValidationFailed.for_field(
                "input_size", "an image dataset needs [H, W] or [C, H, W]."
            )
        if size[0] != channels:
            raise ValidationFailed.for_field(
                "input_size",
                f"the dataset's images have {channels} channel(s), not {size[0]}.",
            )
        if max(size[1:]) > MAX_IMAGE_SIDE:
            raise ValidationFailed.for_field(
                "input_size", f"images are resized to at most {MAX_IMAGE_SIDE} pixels a side."
            )
        return size
    have = sample_size(dataset.input_shape)
    if sample_size(size) != have:
        raise ValidationFailed.for_field(
            "input_size",
            f"does not fit the data: samples of the dataset have {have} values, "
            f"{size} holds {sample_size(size)}.",
        )
    return size


def split_values(dataset: Dataset, split: Split | None) -> np.ndarray | None:
    """The split value ("train", "val", "test", "none") of every row, or None without a split."""
    if split is None:
        return None
    column = split.index
    values = [
        (s[column] if isinstance(s, list) and len(s) > column else "none")
        for s in dataset.items.order_by("filename").values_list("splits", flat=True)
    ]
    return np.asarray(values, dtype="<U5")


def subset_indices(dataset: Dataset, split: Split | None, subset: str) -> np.ndarray:
    """Row numbers of `subset` ("train", "val", "test" or "all") of the dataset."""
    if subset not in SUBSETS:
        raise ValidationFailed.for_field("split_subset", f"must be one of {', '.join(SUBSETS)}.")
    values = split_values(dataset, split)
    if values is None or subset == "all":
        n = dataset.items.count() if is_image(dataset) else dataset.num_samples
        return np.arange(n, dtype=np.int64)
    return np.flatnonzero(values == subset).astype(np.int64)


def load_subset(
    dataset: Dataset,
    *,
    input_size: list[int],
    indices: np.ndarray,
    scale: float = 1.0,
    stored: bool = False,
) -> Subset:
    """The inputs (a private float32 copy shaped `(n, *input_size)`, times `scale`) and class
    labels of the given rows. `stored`: the inputs as `StoredInputs` for training instead, in
    the dtype they are stored in (the whole memory map when every row is taken in order, else
    a copy of the rows in that dtype), converted batch by batch by `fit`."""
    from apps.clusters.training import stored_inputs
    from apps.datasets.selectors import dataset_arrays

    size = (int(input_size[-2]), int(input_size[-1])) if is_image(dataset) else None
    inputs, labels = dataset_arrays(dataset, size=size)
    if labels is None:
        raise ValidationFailed.for_field("dataset_id", "the dataset has no labels.")
    if len(indices) and int(indices.max()) >= len(inputs):
        raise ValidationFailed.for_field(
            "split_index", "the dataset changed since the split was made."
        )
    x: np.ndarray | StoredInputs
    if stored:
        every = len(indices) == len(inputs) and np.array_equal(indices, np.arange(len(inputs)))
        rows = inputs if every else _stored_rows(inputs, indices)
        x = stored_inputs(rows, scale, shape=input_size)
    else:
        x = np.asarray(inputs[indices], dtype=np.float32).reshape(len(indices), *input_size)
        if scale != 1.0:
            x *= np.float32(scale)
    y = np.asarray(labels[indices])
    if y.ndim == 2:  # one-hot rows
        y = y.argmax(axis=1)
    return Subset(x=x, y=y.astype(np.int64, copy=False), indices=indices)


def _stored_rows(inputs, indices: np.ndarray):
    """`inputs[indices]` in the stored dtype (a `Float32Inputs` keeps its conversion)."""
    stored = getattr(inputs, "stored", None)
    if stored is None:
        return inputs[indices]
    return type(inputs)(stored[indices])


def item_names(dataset: Dataset, indices: np.ndarray) -> np.ndarray:
    """The name of each row: the image's path for image datasets, else its zero-padded number."""
    if is_image(dataset):
        names = np.asarray(
            list(dataset.items.order_by("filename").values_list("filename", flat=True)),
            dtype=str,
        )
        return names[indices] if len(names) else np.zeros(0, dtype="<U1")
    width = max(1, len(str(max(0, dataset.num_samples - 1))))
    return np.char.zfill(indices.astype(str), width) if len(indices) else np.zeros(0, "<U1")


def normalize(x: np.ndarray, mean, std) -> None:
    """`(x - mean) / std` per channel (axis 1), in place; nothing when mean is None."""
    if mean is None or std is None or not x.size:
        return
    shape = (1, len(mean)) + (1,) * (x.ndim - 2)
    x -= np.asarray(mean, dtype=np.float32).reshape(shape)
    x /= np.asarray(std, dtype=np.float32).reshape(shape)
