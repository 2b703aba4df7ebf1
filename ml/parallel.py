"""Training on several GPUs of one machine: device lists and ``torch.nn.DataParallel``.

A studio run names its devices as ``["cpu"]`` or ``["gpu:0", "gpu:1", ...]``. :func:`parse_devices`
checks such a list against this machine (``torch.cuda.device_count()``); :func:`data_parallel`
wraps a model placed on the first GPU so each batch is split across all of them. The wrapped
module is only used for forward passes: weights and state dicts stay those of the plain model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["DeviceListError", "data_parallel", "parse_devices", "primary_device"]

_GPU_RE = re.compile(r"(?:gpu|cuda):(\d+)")


class DeviceListError(ValueError):
    """A device list that cannot work on this machine (unknown, missing, mixed or repeated)."""


def parse_devices(devices: Sequence[str], *, gpu_count: int | None = None) -> list[int] | None:
    """CUDA indices of a device list, or None for ``["cpu"]``.

    ``gpu_count`` defaults to ``torch.cuda.device_count()`` (0 without CUDA). Raises
    DeviceListError naming the bad entry.
    """
    if isinstance(devices, str) or not isinstance(devices, Sequence) or not devices:
        raise DeviceListError('must be a non-empty list such as ["cpu"] or ["gpu:0"]')
    if gpu_count is None:
        gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    indices: list[int] = []
    for entry in devices:
        text = str(entry).strip().lower() if isinstance(entry, str) else None
        if text == "cpu":
            if len(devices) != 1:
                raise DeviceListError("'cpu' cannot be combined with other devices")
            return None
        match = _GPU_RE.fullmatch(text or "")
        if match is None:
            raise DeviceListError(f"unknown device {entry!r}: expected 'cpu' or 'gpu:N'")
        index = int(match[1])
        if index >= gpu_count:
            where = f"gpu:0 to gpu:{gpu_count - 1}" if gpu_count else "no GPU"
            raise DeviceListError(f"device 'gpu:{index}' does not exist on this machine ({where})")
        if index in indices:
            raise DeviceListError(f"device 'gpu:{index}' is listed twice")
        indices.append(index)
    return indices


def primary_device(devices: Sequence[str]) -> str:
    """The device the model and data live on: "cpu" or the first GPU as "cuda:N"."""
    indices = parse_devices(devices)
    return "cpu" if indices is None else f"cuda:{indices[0]}"


def data_parallel(model: nn.Module, device_ids: Sequence[int] | None) -> nn.Module:
    """``model`` itself for zero or one device, else a DataParallel over ``device_ids``.

    The model must already be on ``cuda:device_ids[0]``.
    """
    ids = [int(i) for i in (device_ids or [])]
    if len(ids) <= 1:
        return model
    if not torch.cuda.is_available():
        raise DeviceListError("data parallel training needs CUDA")
    return nn.DataParallel(model, device_ids=ids, output_device=ids[0])
