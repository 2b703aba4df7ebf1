"""Device inventory with NVML absent, failing, or simulating two GPUs."""

from __future__ import annotations

from types import SimpleNamespace

import pynvml
import pytest
import torch

from ml import devices
from ml.devices import list_devices

CPU = {"id": "cpu", "name": "CPU", "type": "cpu"}
MIB = 1024 * 1024


def _fail(*_args: object) -> None:
    raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    names = [b"NVIDIA RTX 4090", "NVIDIA A100-SXM4-80GB"]
    memory = [(24564 * MIB, 22100 * MIB), (81920 * MIB, 81000 * MIB)]
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: calls.append("init"))
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 2)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: i)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: names[h])
    monkeypatch.setattr(
        pynvml,
        "nvmlDeviceGetMemoryInfo",
        lambda h: SimpleNamespace(total=memory[h][0], free=memory[h][1], used=0),
    )
    monkeypatch.setattr(pynvml, "nvmlSystemGetCudaDriverVersion_v2", lambda: 12040)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return calls


def test_nvml_missing_lists_cpu_alone(monkeypatch: pytest.MonkeyPatch, no_cuda: None) -> None:
    monkeypatch.setattr(pynvml, "nvmlInit", _fail)
    assert list_devices() == {
        "devices": [CPU],
        "cuda_available": False,
        "cuda_version": None,
        "default_selected": ["cpu"],
    }


def test_pynvml_not_installed(monkeypatch: pytest.MonkeyPatch, no_cuda: None) -> None:
    monkeypatch.setattr(devices, "pynvml", None)
    assert list_devices()["devices"] == [CPU]


def test_two_gpus(monkeypatch: pytest.MonkeyPatch, two_gpus: list[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", "12.1")
    assert list_devices() == {
        "devices": [
            CPU,
            {
                "id": "gpu:0",
                "name": "NVIDIA RTX 4090",
                "type": "gpu",
                "memory_total_mb": 24564,
                "memory_free_mb": 22100,
            },
            {
                "id": "gpu:1",
                "name": "NVIDIA A100-SXM4-80GB",
                "type": "gpu",
                "memory_total_mb": 81920,
                "memory_free_mb": 81000,
            },
        ],
        "cuda_available": True,
        "cuda_version": "12.1",
        "default_selected": ["gpu:0"],
    }
    assert two_gpus == ["init", "shutdown"]


def test_gpus_without_cuda_torch_default_to_cpu(two_gpus: list[str], no_cuda: None) -> None:
    result = list_devices()
    assert [d["id"] for d in result["devices"]] == ["cpu", "gpu:0", "gpu:1"]
    assert result["cuda_available"] is False
    assert result["cuda_version"] == "12.4"  # from the driver
    assert result["default_selected"] == ["cpu"]


def test_cuda_visible_devices_renumbers(
    monkeypatch: pytest.MonkeyPatch, two_gpus: list[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    gpus = list_devices()["devices"][1:]
    assert [(g["id"], g["name"]) for g in gpus] == [("gpu:0", "NVIDIA A100-SXM4-80GB")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert list_devices()["devices"] == [CPU]


def test_failing_device_query_is_skipped(
    monkeypatch: pytest.MonkeyPatch, two_gpus: list[str], no_cuda: None
) -> None:
    def handle(index: int) -> int:
        if index == 0:
            _fail()
        return index

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", handle)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", _fail)
    gpus = list_devices()["devices"][1:]
    assert gpus == [
        {
            "id": "gpu:1",
            "name": "NVIDIA A100-SXM4-80GB",
            "type": "gpu",
            "memory_total_mb": 0,
            "memory_free_mb": 0,
        }
    ]


def test_torch_fallback_when_nvml_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlInit", _fail)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (70 * 1024 * MIB, 80 * 1024 * MIB))
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    result = list_devices()
    assert result["devices"][1] == {
        "id": "gpu:0",
        "name": "NVIDIA H100",
        "type": "gpu",
        "memory_total_mb": 81920,
        "memory_free_mb": 71680,
    }
    assert result["default_selected"] == ["gpu:0"]
    assert result["cuda_version"] == "12.8"
