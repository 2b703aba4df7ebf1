"""Inventory of training devices: the CPU and every NVIDIA GPU, for ``GET /api/system/devices``.

GPUs are read through NVML (``pynvml`` from nvidia-ml-py): name and total/free memory. Every NVML
failure (library missing, no driver, a device that cannot be queried) is caught; if NVML gives
nothing but torch can use CUDA, torch supplies the names and memory instead. A machine without
either lists the CPU alone.

GPU ids are ``gpu:N`` with N the CUDA index torch uses (``torch.device("cuda", N)``). When
``CUDA_VISIBLE_DEVICES`` lists NVML indices, NVML devices are renumbered to match and hidden ones
are left out.

``cuda_available`` says whether torch can train on CUDA here; ``default_selected`` is
``["gpu:0"]`` when a GPU is listed and CUDA is available, else ``["cpu"]``.

Tests simulate GPUs by monkeypatching the ``pynvml`` functions used here (``nvmlInit``,
``nvmlShutdown``, ``nvmlDeviceGetCount``, ``nvmlDeviceGetHandleByIndex``, ``nvmlDeviceGetName``,
``nvmlDeviceGetMemoryInfo``, ``nvmlSystemGetCudaDriverVersion_v2``) or ``ml.devices.pynvml``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

try:  # nvidia-ml-py; optional at run time
    import pynvml
except ImportError:  # pragma: no cover - depends on the environment
    pynvml = None

__all__ = ["list_devices"]

_MIB = 1024 * 1024


def list_devices() -> dict[str, Any]:
    """The CPU and GPUs, CUDA availability and version, and the recommended default selection."""
    gpus, driver_cuda = _nvml_inventory()
    cuda_available = _torch_cuda_available()
    if not gpus and cuda_available and not _all_hidden():
        gpus = _torch_inventory()
    devices: list[dict[str, Any]] = [{"id": "cpu", "name": "CPU", "type": "cpu"}]
    devices.extend(gpus)
    return {
        "devices": devices,
        "cuda_available": cuda_available,
        "cuda_version": torch.version.cuda or driver_cuda,
        "default_selected": ["gpu:0"] if gpus and cuda_available else ["cpu"],
    }


def _gpu(index: int, name: str, total: int, free: int) -> dict[str, Any]:
    return {
        "id": f"gpu:{index}",
        "name": name,
        "type": "gpu",
        "memory_total_mb": int(total // _MIB),
        "memory_free_mb": int(free // _MIB),
    }


def _nvml_inventory() -> tuple[list[dict[str, Any]], str | None]:
    """GPUs seen by NVML (renumbered to CUDA indices) and the driver's CUDA version."""
    if pynvml is None:
        return [], None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError, OSError: no library or no driver
        return [], None
    try:
        driver_cuda = _nvml_driver_cuda()
        count = int(pynvml.nvmlDeviceGetCount())
        gpus = []
        for cuda_index, nvml_index in enumerate(_visible_nvml_indices(count)):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
                name = pynvml.nvmlDeviceGetName(handle)
            except Exception:
                continue
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            try:
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                total, free = int(memory.total), int(memory.free)
            except Exception:
                total = free = 0
            gpus.append(_gpu(cuda_index, str(name), total, free))
        return gpus, driver_cuda
    except Exception:
        return [], None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _nvml_driver_cuda() -> str | None:
    """The driver's CUDA version as ``"12.4"`` (NVML reports 12040)."""
    try:
        version = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
    except Exception:
        return None
    return f"{version // 1000}.{version % 1000 // 10}"


def _all_hidden() -> bool:
    """CUDA_VISIBLE_DEVICES set but empty (or -1): no GPU is meant to be used."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible is not None and visible.strip() in ("", "-1")


def _visible_nvml_indices(count: int) -> list[int]:
    """NVML indices in CUDA order, honouring a CUDA_VISIBLE_DEVICES list of integer indices."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    parts = [part.strip() for part in visible.split(",")]
    if parts[0] and not parts[0].lstrip("-").isdigit():
        return list(range(count))  # GPU/MIG UUIDs: not mappable here, keep NVML's order
    indices = []
    for part in parts:  # like CUDA, stop at the first invalid entry ("" and "-1" hide all)
        if not part.isdigit() or int(part) >= count:
            break
        indices.append(int(part))
    return indices


def _torch_cuda_available() -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _torch_inventory() -> list[dict[str, Any]]:
    """GPUs as torch sees them, when NVML is unusable."""
    gpus = []
    try:
        count = torch.cuda.device_count()
    except Exception:
        return []
    for index in range(count):
        try:
            name = torch.cuda.get_device_name(index)
        except Exception:
            continue
        try:
            free, total = torch.cuda.mem_get_info(index)
        except Exception:
            free = total = 0
        gpus.append(_gpu(index, name, total, free))
    return gpus
