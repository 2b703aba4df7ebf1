"""ONNX, TorchScript and safetensors exports, each checked against the original model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ml.architectures import build_architecture
from ml.checkpoints import state_from_bytes
from ml.export import (
    check_onnx_parity,
    check_safetensors_parity,
    check_torchscript_parity,
    export_onnx,
    export_safetensors,
    export_torchscript,
)
from ml.networks import build_network
from ml.templates import parse_template
from tests.ml.samples import DIGITS_TEMPLATE, MULTI_TEMPLATE


def _sample(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


@pytest.mark.parametrize("name", ["mlp", "cnn_small", "resnet_tiny"])
def test_onnx_parity_for_architectures(name: str, tmp_path: Path) -> None:
    model = build_architecture(name, input_shape=(1, 8, 8), num_classes=10, seed=0)
    path = tmp_path / "model.onnx"
    result = export_onnx(model, input_shape=(1, 1, 8, 8), path=path)
    assert result.exporter == "legacy"
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["output"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch_size"
    parity = check_onnx_parity(model, path, _sample(7, 1, 8, 8))  # another batch size
    assert parity.ok, parity
    assert parity.max_abs_diff < 1e-4


def test_onnx_parity_for_template_network_with_json_options(tmp_path: Path) -> None:
    model = build_network(parse_template(DIGITS_TEMPLATE), seed=0)
    path = tmp_path / "template.onnx"
    result = export_onnx(
        model,
        input_shape=[1, 64],
        opset_version=17,
        dynamic_axes={"input": {"0": "batch"}, "output": {"0": "batch"}},
        simplify=True,
        path=path,
    )
    assert onnx.load(str(path)).opset_import[0].version == 17
    assert result.simplified and any(n.startswith("simplified with") for n in result.notes)
    parity = check_onnx_parity(model, path, _sample(5, 64))
    assert parity.ok and parity.max_rel_diff < 1e-3


def test_parity_detects_a_different_model(tmp_path: Path) -> None:
    model = build_architecture("mlp", input_shape=(64,), num_classes=10, seed=0)
    path = tmp_path / "model.onnx"
    export_onnx(model, input_shape=(2, 64), path=path)
    other = build_architecture("mlp", input_shape=(64,), num_classes=10, seed=1)
    parity = check_onnx_parity(other, path, _sample(3, 64))
    assert not parity.ok and parity.max_abs_diff > 1e-3


def test_multi_io_template_cannot_be_exported(tmp_path: Path) -> None:
    model = build_network(parse_template(MULTI_TEMPLATE), seed=0)
    with pytest.raises(ValueError, match="single input brick"):
        export_onnx(model, input_shape=(1, 4), path=tmp_path / "m.onnx")


@pytest.mark.parametrize("kind", ["lenet", "template"])
def test_torchscript_parity(kind: str, tmp_path: Path) -> None:
    if kind == "template":
        model = build_network(parse_template(DIGITS_TEMPLATE), seed=0)
        shape: tuple[int, ...] = (64,)
    else:
        model = build_architecture("lenet", input_shape=(1, 28, 28), num_classes=10, seed=0)
        shape = (1, 28, 28)
    model.train()
    path = tmp_path / "model.pt"
    export_torchscript(model, input_shape=(2, *shape), path=path)
    assert model.training  # mode restored
    parity = check_torchscript_parity(model, path, _sample(3, *shape))
    assert parity.ok, parity


def test_export_safetensors(tmp_path: Path) -> None:
    model = build_architecture("cnn_small", input_shape=(1, 8, 8), num_classes=10, seed=0)
    path = tmp_path / "model.safetensors"
    export_safetensors(model, path, {"format": "orchard"})
    state, metadata = state_from_bytes(path.read_bytes())
    assert metadata == {"format": "orchard"}
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_bad_input_shape(tmp_path: Path) -> None:
    model = build_architecture("mlp", input_shape=(64,), num_classes=10)
    with pytest.raises(ValueError, match="batch first"):
        export_onnx(model, input_shape=(64,), path=tmp_path / "m.onnx")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_metadata_travels_inside_onnx_and_torchscript(tmp_path: Path) -> None:
    model = build_architecture("mlp", input_shape=(64,), num_classes=10, seed=0)
    meta = {"orchard": '{"input_scale": 0.0625}'}
    export_onnx(model, input_shape=(1, 64), path=tmp_path / "m.onnx", metadata=meta)
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props == meta
    export_torchscript(model, input_shape=(1, 64), path=tmp_path / "m.pt", metadata=meta)
    extra = {"orchard": ""}
    torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    assert extra["orchard"].decode() == meta["orchard"]


def test_safetensors_parity_reloads_bit_for_bit(tmp_path: Path) -> None:
    model = build_architecture("resnet_tiny", input_shape=(1, 8, 8), num_classes=10, seed=0)
    path = tmp_path / "model.safetensors"
    export_safetensors(model, path)
    parity = check_safetensors_parity(model, path, _sample(4, 1, 8, 8))
    assert parity.ok and parity.max_abs_diff == 0.0
    assert check_safetensors_parity(model, path).ok  # tensors only


def test_safetensors_parity_detects_other_weights(tmp_path: Path) -> None:
    model = build_architecture("mlp", input_shape=(64,), num_classes=10, seed=0)
    path = tmp_path / "model.safetensors"
    other = build_architecture("mlp", input_shape=(64,), num_classes=10, seed=1)
    export_safetensors(other, path)
    parity = check_safetensors_parity(model, path, _sample(3, 64))
    assert not parity.ok and parity.max_abs_diff > 1e-3
    # Even a difference far below the tolerances fails: the file must round-trip exactly.
    with torch.no_grad():
        other.load_state_dict(model.state_dict())
        other[1].bias[0] += 1e-7
    export_safetensors(other, path)
    parity = check_safetensors_parity(model, path, _sample(3, 64))
    assert not parity.ok and 0 < parity.max_abs_diff < 1e-6


def test_safetensors_parity_refuses_missing_tensors(tmp_path: Path) -> None:
    model = build_architecture("mlp", input_shape=(64,), num_classes=10, seed=0)
    path = tmp_path / "model.safetensors"
    export_safetensors(build_architecture("mlp", input_shape=(32,), num_classes=10), path)
    assert not check_safetensors_parity(model, path).ok  # other shapes
    export_safetensors(build_architecture("cnn_small", input_shape=(1, 8, 8), num_classes=10), path)
    assert not check_safetensors_parity(model, path).ok  # other names
