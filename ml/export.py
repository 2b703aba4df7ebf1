"""Model export (ONNX, TorchScript, safetensors) and parity checks against the original model.

ONNX: the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is used first: it
is fast, honours ``opset_version`` and ``dynamic_axes`` exactly and needs no graph optimiser. If it
fails (or a later torch drops it) the ``torch.export``-based exporter is used instead. The graph's
single input is named ``"input"`` and its output ``"output"``; by default the batch dimension
(axis 0 of both) is dynamic.

``input_shape`` for exports is the full shape of an example input, batch first (as in the studio's
export options, e.g. ``[1, 3, 224, 224]``).

``metadata`` (str -> str) travels inside the exported file: ONNX ``metadata_props``, TorchScript
extra files (``torch.jit.load(..., _extra_files=...)``), the safetensors header.

safetensors parity (:func:`check_safetensors_parity`) reloads the file into a copy of the model:
every tensor must come back bit for bit, and the reloaded model must reproduce the outputs.

Parity checks run the original model and the exported one on the same sample and compare with
``|exported - original| <= atol + rtol * |original|`` element-wise; ``max_rel_diff`` divides by
``max(|original|, atol)`` so that outputs near zero do not inflate it.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from ml.checkpoints import state_to_bytes
from ml.data import model_device

__all__ = [
    "OnnxExportResult",
    "ParityResult",
    "check_onnx_parity",
    "check_safetensors_parity",
    "check_torchscript_parity",
    "export_onnx",
    "export_safetensors",
    "export_torchscript",
]

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_DYNAMIC_AXES: dict[str, dict[int, str]] = {
    INPUT_NAME: {0: "batch_size"},
    OUTPUT_NAME: {0: "batch_size"},
}


@dataclass(frozen=True)
class ParityResult:
    """Whether an exported model reproduces the original, and by how much they differ."""

    ok: bool
    max_abs_diff: float
    max_rel_diff: float


@dataclass
class OnnxExportResult:
    """What :func:`export_onnx` wrote and how (``notes`` explains skipped options)."""

    path: str
    exporter: str
    opset_version: int
    simplified: bool = False
    notes: list[str] = field(default_factory=list)


def export_onnx(
    model: nn.Module,
    *,
    input_shape: Sequence[int],
    path: str | os.PathLike[str],
    opset_version: int = 17,
    dynamic_axes: Mapping[str, Mapping[int | str, str] | Sequence[int]] | None = None,
    simplify: bool = False,
    exporter: str = "auto",
    metadata: Mapping[str, str] | None = None,
) -> OnnxExportResult:
    """Export a single-input, single-output model to an ONNX file and validate it with onnx.

    ``dynamic_axes`` uses torch's format; JSON-style string axis keys (``{"0": "batch"}``) are
    accepted. ``simplify`` runs onnxsim when it is installed, else onnxscript's optimizer.
    ``exporter``: ``"auto"`` (legacy, then dynamo), ``"legacy"`` or ``"dynamo"``.
    """
    if exporter not in ("auto", "legacy", "dynamo"):
        raise ValueError("exporter must be 'auto', 'legacy' or 'dynamo'")
    axes = _normalise_axes(
        cast(Mapping, DEFAULT_DYNAMIC_AXES) if dynamic_axes is None else dynamic_axes
    )
    # A dynamic axis traced at size 1 may get specialised; trace such an axis at size 2.
    shape = [int(d) for d in input_shape]
    for axis in axes.get(INPUT_NAME, {}):
        if 0 <= axis < len(shape) and shape[axis] == 1:
            shape[axis] = 2
    sample = _example_input(model, shape)
    target = Path(path)
    notes: list[str] = []
    used = ""
    with _eval_mode(model):
        if exporter in ("auto", "legacy"):
            try:
                _export_legacy(model, sample, target, opset_version, axes)
                used = "legacy"
            except Exception as exc:
                if exporter == "legacy":
                    raise
                reason = str(exc).splitlines()[0][:200] if str(exc) else ""
                notes.append(
                    f"legacy exporter failed ({type(exc).__name__}: {reason}); used dynamo"
                )
        if exporter == "dynamo" or not used:
            _export_dynamo(model, sample, target, opset_version, axes)
            used = "dynamo"

    import onnx

    proto = onnx.load(str(target))
    onnx.checker.check_model(proto)
    result = OnnxExportResult(str(target), used, opset_version, notes=notes)
    if simplify:
        _simplify(proto, target, result)
    if metadata:
        proto = onnx.load(str(target))
        onnx.helper.set_model_props(proto, {str(k): str(v) for k, v in metadata.items()})
        onnx.save(proto, str(target))
    return result


def check_onnx_parity(
    model: nn.Module,
    path: str | os.PathLike[str],
    sample: np.ndarray,
    rtol: float = 1e-3,
    atol: float = 1e-5,
) -> ParityResult:
    """Compare ``model(sample)`` with the ONNX file run by onnxruntime's CPU provider."""
    import onnxruntime as ort

    array = np.ascontiguousarray(sample, dtype=np.float32)
    expected = _torch_output(model, array)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: array})
    return _compare(expected, np.asarray(actual), rtol, atol)


def export_torchscript(
    model: nn.Module,
    *,
    input_shape: Sequence[int],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Trace the model on an example input of ``input_shape`` and save it as TorchScript.

    ``metadata`` is stored as extra files of the archive (one per key).
    """
    sample = _example_input(model, input_shape)
    extra = {str(k): str(v) for k, v in (metadata or {}).items()}
    with _eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in torch 2.x but still works
        traced = torch.jit.trace(model, (sample,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files=extra)


def check_torchscript_parity(
    model: nn.Module,
    path: str | os.PathLike[str],
    sample: np.ndarray,
    rtol: float = 1e-3,
    atol: float = 1e-5,
) -> ParityResult:
    """Compare ``model(sample)`` with the saved TorchScript module (both on the CPU)."""
    array = np.ascontiguousarray(sample, dtype=np.float32)
    expected = _torch_output(model, array)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    loaded.eval()
    with torch.inference_mode():
        actual = loaded(torch.from_numpy(array))
    return _compare(expected, actual.float().numpy(), rtol, atol)


def export_safetensors(
    model: nn.Module, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """Write the model's state dict (and optional str metadata) as a safetensors file."""
    Path(path).write_bytes(state_to_bytes(model.state_dict(), metadata or {}))


def check_safetensors_parity(
    model: nn.Module,
    path: str | os.PathLike[str],
    sample: np.ndarray | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-5,
) -> ParityResult:
    """Reload a safetensors export into a copy of ``model`` and compare.

    Every tensor of the state dict must come back with the same name, shape, dtype and bits
    (``ok`` is False otherwise, whatever the tolerances). With ``sample``, the reloaded copy's
    output must also match ``model(sample)`` within ``rtol``/``atol``. ``max_abs_diff`` is the
    largest difference found in either comparison.
    """
    from ml.checkpoints import state_from_bytes

    state, _meta = state_from_bytes(Path(path).read_bytes())
    original = model.state_dict()
    if set(state) != set(original):
        return ParityResult(False, math.inf, math.inf)
    max_abs, max_rel, exact = 0.0, 0.0, True
    for name, tensor in original.items():
        loaded = state[name]
        if loaded.shape != tensor.shape or loaded.dtype != tensor.dtype:
            return ParityResult(False, math.inf, math.inf)
        same = torch.equal(loaded, tensor.detach().cpu())
        exact = exact and same
        if not same and tensor.numel():
            diff = _compare(tensor.detach().cpu().double().numpy(), loaded.double().numpy(), 0, 0)
            max_abs, max_rel = max(max_abs, diff.max_abs_diff), max(max_rel, diff.max_rel_diff)
    if sample is None:
        return ParityResult(exact, max_abs, max_rel)
    import copy

    reloaded = copy.deepcopy(model)
    reloaded.load_state_dict(state, strict=True)
    array = np.ascontiguousarray(sample, dtype=np.float32)
    outputs = _compare(_torch_output(model, array), _torch_output(reloaded, array), rtol, atol)
    return ParityResult(
        exact and outputs.ok,
        max(max_abs, outputs.max_abs_diff),
        max(max_rel, outputs.max_rel_diff),
    )


# --- helpers ------------------------------------------------------------------------------------


def _export_legacy(
    model: nn.Module, sample: Tensor, path: Path, opset: int, axes: dict[str, dict[int, str]]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of the TorchScript-based exporter
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_axes=axes or None,
            do_constant_folding=True,
        )


def _export_dynamo(
    model: nn.Module, sample: Tensor, path: Path, opset: int, axes: dict[str, dict[int, str]]
) -> None:
    input_axes = axes.get(INPUT_NAME, {})
    dims = {
        axis: torch.export.Dim(re.sub(r"\W", "_", name) or f"dim{axis}")
        for axis, name in input_axes.items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes=({**dims},) if dims else None,
            external_data=False,
            verbose=False,
        )


def _simplify(proto: Any, target: Path, result: OnnxExportResult) -> None:
    """onnxsim when it is installed, else onnxscript's optimizer (constant folding, dead code
    and redundant-node removal; onnxscript is a dependency). The parity check runs afterwards."""
    import onnx

    try:
        import onnxsim
    except ImportError:
        onnxsim = None
    if onnxsim is not None:
        simplified, ok = onnxsim.simplify(proto)
        if not ok:
            result.notes.append("simplify skipped: onnxsim could not validate the simplified model")
            return
        tool = "onnxsim"
    else:
        import onnxscript.optimizer

        simplified = onnxscript.optimizer.optimize(proto)
        onnx.checker.check_model(simplified)
        tool = "onnxscript's optimizer"
    before, after = len(proto.graph.node), len(simplified.graph.node)
    onnx.save(simplified, str(target))
    result.simplified = True
    result.notes.append(f"simplified with {tool}: {before} -> {after} nodes")


def _normalise_axes(
    axes: Mapping[str, Mapping[int | str, str] | Sequence[int]],
) -> dict[str, dict[int, str]]:
    """torch's dynamic_axes with int axis keys (JSON objects arrive with string keys)."""
    result: dict[str, dict[int, str]] = {}
    for name, spec in axes.items():
        if name not in (INPUT_NAME, OUTPUT_NAME):
            raise ValueError(f"dynamic_axes names must be '{INPUT_NAME}' or '{OUTPUT_NAME}'")
        if isinstance(spec, Mapping):
            result[name] = {int(axis): str(label) for axis, label in spec.items()}
        else:
            result[name] = {int(axis): f"{name}_dim{int(axis)}" for axis in spec}
    return result


def _example_input(model: nn.Module, input_shape: Sequence[int]) -> Tensor:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) < 2 or any(d < 1 for d in shape):
        raise ValueError(
            f"input_shape must be the full example shape, batch first (e.g. (1, 3, 224, 224)), "
            f"got {shape}"
        )
    input_names = getattr(model, "input_names", None)
    output_names = getattr(model, "output_names", None)
    if input_names is not None and len(input_names) != 1:
        raise ValueError("only networks with a single input brick can be exported")
    if output_names is not None and len(output_names) != 1:
        raise ValueError("only networks with a single output brick can be exported")
    generator = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=generator).to(model_device(model))


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put a model in eval mode for the block and restore its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _torch_output(model: nn.Module, array: np.ndarray) -> np.ndarray:
    with _eval_mode(model), torch.inference_mode():
        out = model(torch.from_numpy(array).to(model_device(model)))
    if not isinstance(out, Tensor):
        raise ValueError("parity checks need a model that returns one tensor")
    return out.float().cpu().numpy()


def _compare(expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float) -> ParityResult:
    if expected.shape != actual.shape:
        return ParityResult(False, math.inf, math.inf)
    if expected.size == 0:
        return ParityResult(True, 0.0, 0.0)
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    scale = np.abs(expected.astype(np.float64))
    max_abs = float(diff.max())
    floor = atol if atol > 0 else float(np.finfo(np.float32).tiny)
    max_rel = float((diff / np.maximum(scale, floor)).max())
    ok = bool(np.all(diff <= atol + rtol * scale)) and bool(np.all(np.isfinite(actual)))
    return ParityResult(ok, max_abs, max_rel)
