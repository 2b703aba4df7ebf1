"""Turn NumPy sample arrays into device tensors, and check whether a dataset fits on a device.

Training keeps whole datasets as tensors on the training device (no DataLoader, no per-sample
Python), so conversion happens once, here; inputs given as :class:`StoredInputs` stay in their
stored dtype there (uint8 pixels: a quarter of float32's bytes) and each batch is converted as it
is used.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "DEVICE_MEMORY_FRACTION",
    "ConvertedBatches",
    "DeviceInputs",
    "StoredInputs",
    "as_tensors",
    "copy_on_write",
    "fits_on_device",
    "input_scale",
    "labels_to_indices",
    "model_device",
    "training_tensors",
]

# Share of free device memory a dataset may take; the rest is for weights, activations, optimizer.
DEVICE_MEMORY_FRACTION = 0.5


def as_tensors(
    x: np.ndarray | Tensor,
    y: np.ndarray | Tensor | None,
    *,
    device: torch.device | str,
    task: str = "classification",
) -> tuple[Tensor, Tensor | None]:
    """Convert samples to float32 and labels to int64 class indices, both on ``device``.

    Labels may be class indices of shape ``(n,)`` or ``(n, 1)``, or one-hot / score rows of
    shape ``(n, k)`` (converted by argmax). With ``task="regression"`` labels stay float32 and
    keep their shape. Raises ValueError for mismatched lengths or non-integer / negative labels.
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"unknown task '{task}' (expected 'classification' or 'regression')")
    device = torch.device(device)
    x_tensor = _to_tensor(x).to(device=device, dtype=torch.float32)
    if y is None:
        return x_tensor, None
    return x_tensor, _targets(y, x_tensor.shape[0], device, task)


def training_tensors(
    x: np.ndarray | Tensor | StoredInputs,
    y: np.ndarray | Tensor,
    *,
    device: torch.device | str,
    task: str = "classification",
) -> tuple[Tensor | ConvertedBatches, Tensor]:
    """:func:`as_tensors` for training: ``StoredInputs`` are moved to ``device`` once in their
    stored dtype and come back as :class:`ConvertedBatches`; other inputs as float32 tensors."""
    if not isinstance(x, StoredInputs):
        x_tensor, y_tensor = as_tensors(x, y, device=device, task=task)
        assert y_tensor is not None
        return x_tensor, y_tensor
    if task not in ("classification", "regression"):
        raise ValueError(f"unknown task '{task}' (expected 'classification' or 'regression')")
    device = torch.device(device)
    values = x.values
    if isinstance(values, np.ndarray):
        values = copy_on_write(values)
    with warnings.catch_warnings():
        # A read-only array (a map of the dataset's file): the batches are only ever read.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        stored = _to_tensor(values).to(device)
    batches = ConvertedBatches(stored, x.batch_converter(device))
    return batches, _targets(y, stored.shape[0], device, task)


class ConvertedBatches:
    """Inputs kept on the device in their stored dtype that hand out float32 batches: what
    training reads of a ``Tensor`` (``shape``, ``device``, ``index_select`` and slices), each
    batch converted as :class:`StoredInputs` says."""

    def __init__(self, values: Tensor, convert: Callable[[Tensor], Tensor]) -> None:
        self.values, self.convert = values, convert
        self.shape, self.device = values.shape, values.device

    def index_select(self, dim: int, index: Tensor) -> Tensor:
        return self.convert(self.values.index_select(dim, index))

    def __getitem__(self, key: slice) -> Tensor:
        return self.convert(self.values[key])


# Training inputs on the device: float32 tensors, or stored ones converted batch by batch.
DeviceInputs = Tensor | ConvertedBatches


def _targets(y: np.ndarray | Tensor, n: int, device: torch.device, task: str) -> Tensor:
    """Labels as int64 class indices (float32 targets for regression) on ``device``."""
    y_tensor = _to_tensor(y)
    if y_tensor.shape[0] != n:
        raise ValueError(f"x has {n} samples but y has {y_tensor.shape[0]} labels")
    if task == "regression":
        return y_tensor.to(device=device, dtype=torch.float32)
    return labels_to_indices(y_tensor).to(device)


@dataclass(frozen=True)
class StoredInputs:
    """Samples kept in the dtype they are stored in, and how they become the float32 numbers a
    model is fed, batch by batch: converted to float32, multiplied by each of ``factors`` in
    turn (float32 products, as ``x *= np.float32(f)``), then ``(x - mean) / std`` per channel
    (axis 1) when ``mean`` and ``std`` are given. :func:`ml.training.fit` keeps ``values`` on
    the training device as they are and converts only the batch it uses, giving the model the
    same numbers as converting the whole array first (:meth:`as_float32`) would.
    """

    values: np.ndarray | Tensor
    factors: tuple[float, ...] = ()
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # Each factor as the float32 number NumPy multiplies by: torch then computes the same
        # correctly rounded float32 products.
        object.__setattr__(self, "factors", tuple(float(np.float32(f)) for f in self.factors))
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std must be given together")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def scaled(self, factor: float) -> StoredInputs:
        """The same inputs with one more factor (none for 1)."""
        if float(factor) == 1.0:
            return self
        return StoredInputs(self.values, (*self.factors, factor), self.mean, self.std)

    def normalized(self, mean, std) -> StoredInputs:
        """The same inputs, then normalised per channel (unchanged when ``mean`` is None)."""
        if mean is None or std is None:
            return self
        values = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        return StoredInputs(self.values, self.factors, *values)

    def convert(self, values: np.ndarray) -> np.ndarray:
        """Some of the stored values (e.g. their extremes) as the model would see them."""
        out = np.asarray(values, dtype=np.float32)
        for factor in self.factors:
            out = out * np.float32(factor)
        if self.mean is not None and self.std is not None and out.ndim >= 2:
            shape = (1, len(self.mean)) + (1,) * (out.ndim - 2)
            out = out - np.asarray(self.mean, dtype=np.float32).reshape(shape)
            out = out / np.asarray(self.std, dtype=np.float32).reshape(shape)
        return out

    def as_float32(self) -> np.ndarray:
        """The whole array converted (what training avoids; for tests and small sets)."""
        values = self.values
        return self.convert(values.numpy() if isinstance(values, Tensor) else values)

    def batch_converter(self, device: torch.device) -> Callable[[Tensor], Tensor]:
        """The per-batch conversion on ``device``; it never writes into its argument (a slice
        of ``values``, which may map a read-only file)."""
        factors = self.factors
        mean = std = None
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean, dtype=torch.float32, device=device)
            std = torch.tensor(self.std, dtype=torch.float32, device=device)

        def convert(batch: Tensor) -> Tensor:
            out = batch.to(torch.float32)
            for factor in factors:
                out = out * factor
            if mean is not None and std is not None:
                shape = (1, mean.shape[0]) + (1,) * (out.dim() - 2)
                out = (out - mean.reshape(shape)) / std.reshape(shape)
            return out

        return convert


def copy_on_write(x: np.ndarray) -> np.ndarray:
    """A whole-file memory map (``np.load(..., mmap_mode="r")``) mapped again copy-on-write:
    writable for torch (``torch.from_numpy`` of a read-only array warns), while the pages stay
    the page cache's, shared with every reader, until written (training never writes them).
    Anything else (an array in memory, a slice of a map, which keeps its parent's offset) is
    returned as it is."""
    if (
        isinstance(x, np.memmap)
        and x.filename
        and x.flags.c_contiguous
        and x.offset + x.nbytes == os.path.getsize(x.filename)
    ):
        return np.memmap(x.filename, dtype=x.dtype, mode="c", offset=x.offset, shape=x.shape)
    return x


def input_scale(x: np.ndarray) -> float:
    """The one factor that brings a model's inputs into [-1, 1], found on its first training data
    and kept with the model (CSV columns may hold large values; images and MNIST already lie in
    0..1): ``1 / peak`` when the largest absolute value passes 1, else 1.

    ``max``/``min`` instead of ``abs(x).max()``: no temporary the size of the dataset.
    """
    peak = max(float(x.max()), -float(x.min())) if x.size else 1.0
    return 1.0 / peak if peak > 1.0 else 1.0


def labels_to_indices(y: np.ndarray | Tensor) -> Tensor:
    """Class labels as an int64 ``(n,)`` tensor: argmax of 2-D one-hot rows, checked indices."""
    labels = _to_tensor(y)
    if labels.dim() == 2 and labels.shape[1] > 1:
        return labels.argmax(dim=1)
    if labels.dim() == 2:
        labels = labels[:, 0]
    if labels.dim() != 1:
        raise ValueError(
            f"labels must be 1-D indices or 2-D one-hot rows, got {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        if labels.numel() and not bool(torch.all(labels == labels.round())):
            raise ValueError("class labels must be whole numbers")
    elif labels.dtype == torch.bool:
        labels = labels.to(torch.int64)
    if labels.numel() and bool(labels.min() < 0):
        raise ValueError("class labels must not be negative")
    return labels.to(torch.int64)


def fits_on_device(nbytes: int, device: torch.device | str) -> bool:
    """Whether ``nbytes`` of data can be kept on ``device`` with room left to train.

    CUDA: at most ``DEVICE_MEMORY_FRACTION`` of the device's free memory. CPU: of the machine's
    available memory. True when the amount of free memory cannot be determined.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError, ValueError):
            return False
        return nbytes <= free * DEVICE_MEMORY_FRACTION
    available = _available_host_memory()
    return available is None or nbytes <= available * DEVICE_MEMORY_FRACTION


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); CPU for a model without any."""
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _available_host_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _to_tensor(value: np.ndarray | Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    array = np.asarray(value)
    if array.dtype == object:
        raise ValueError("arrays of Python objects cannot be converted to tensors")
    if not array.dtype.isnative:  # e.g. big-endian MNIST idx data
        array = array.astype(array.dtype.newbyteorder("="))
    return torch.from_numpy(np.ascontiguousarray(array))
