"""Turn NumPy sample arrays into device tensors, and check whether a dataset fits on a device.

Training keeps whole datasets as tensors on the training device (no DataLoader, no per-sample
Python), so conversion happens once, here.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "DEVICE_MEMORY_FRACTION",
    "as_tensors",
    "fits_on_device",
    "input_scale",
    "labels_to_indices",
    "model_device",
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
    y_tensor = _to_tensor(y)
    if y_tensor.shape[0] != x_tensor.shape[0]:
        raise ValueError(f"x has {x_tensor.shape[0]} samples but y has {y_tensor.shape[0]} labels")
    if task == "regression":
        return x_tensor, y_tensor.to(device=device, dtype=torch.float32)
    return x_tensor, labels_to_indices(y_tensor).to(device)


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
