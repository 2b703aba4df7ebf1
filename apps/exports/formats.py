"""The export formats, their options with defaults, and the validation of a request's options.

`format_catalogue()` is what `GET /api/export/formats` answers; `normalize_options()` turns the
options of a create request into the complete options the worker uses (every default filled in),
or raises ValidationFailed naming the option (`options.<name>`).

ONNX `simplify` runs onnxsim when it is installed, else onnxscript's optimizer (a dependency:
constant folding, dead-code and redundant-node removal); the export's `notes` say which ran and
how many nodes it removed, and the parity check runs on the simplified file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from apps.core.exceptions import ValidationFailed
from apps.exports.models import ExportFormat

ONNX_OPSET_MIN = 9
ONNX_OPSET_MAX = 23
ONNX_OPSET_DEFAULT = 17
DEFAULT_DYNAMIC_AXES: dict[str, dict[str, str]] = {
    "input": {"0": "batch_size"},
    "output": {"0": "batch_size"},
}
# An example input is at most this many values (64 MiB of float32) and this many dimensions.
MAX_INPUT_ELEMENTS = 1 << 24
MAX_INPUT_RANK = 6
OUTPUT_RANK = 2  # every exportable network answers (batch, outputs)
_AXIS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class OptionSpec:
    """One option of a format as the catalogue shows it."""

    name: str
    type: str
    default: Any
    description: str
    constraints: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FormatSpec:
    id: str
    name: str
    extension: str
    description: str
    parity_check: str
    options: tuple[OptionSpec, ...]


_INPUT_SHAPE = OptionSpec(
    "input_shape",
    "array",
    None,
    "Full shape of an example input, batch first (e.g. [1, 3, 224, 224]). Its non-batch "
    "dimensions must hold exactly the values of one sample of the model. Default: "
    "[1, <the model's sample shape>].",
    {"items": "integer >= 1", "min_items": 2, "max_items": MAX_INPUT_RANK},
)

FORMATS: dict[str, FormatSpec] = {
    ExportFormat.ONNX: FormatSpec(
        "onnx",
        "ONNX",
        ".onnx",
        "An ONNX graph with one input named 'input' and one output named 'output', "
        "validated with onnx.checker.",
        "onnxruntime (CPU) against torch eager on the same inputs, within rtol 1e-3 / atol 1e-5",
        (
            OptionSpec(
                "opset_version",
                "integer",
                ONNX_OPSET_DEFAULT,
                "ONNX opset of the graph.",
                {"minimum": ONNX_OPSET_MIN, "maximum": ONNX_OPSET_MAX},
            ),
            _INPUT_SHAPE,
            OptionSpec(
                "dynamic_axes",
                "object",
                DEFAULT_DYNAMIC_AXES,
                "Axes of 'input' / 'output' left free in the graph, as {name: {axis: label}} "
                "(or {name: [axis, ...]}). {} exports a graph of fixed shape.",
            ),
            OptionSpec(
                "simplify",
                "boolean",
                False,
                "Simplify the graph (onnxsim when installed, else onnxscript's optimizer).",
            ),
        ),
    ),
    ExportFormat.TORCHSCRIPT: FormatSpec(
        "torchscript",
        "TorchScript",
        ".pt",
        "A traced TorchScript module (torch.jit.load); the batch size may vary.",
        "the loaded TorchScript module against torch eager, within rtol 1e-3 / atol 1e-5",
        (_INPUT_SHAPE,),
    ),
    ExportFormat.SAFETENSORS: FormatSpec(
        "safetensors",
        "safetensors weights",
        ".safetensors",
        "The state dict as safetensors; the header's 'orchard' metadata describes the network "
        "(source, template, config), so the file can be restored as a checkpoint.",
        "the file reloaded into the network: every tensor bit for bit, and the same outputs",
        (),
    ),
}


# Formats the studio plan lists that Orchard does not produce (plan/08-export: "Coming Soon").
UNAVAILABLE_FORMATS: dict[str, str] = {
    "tensorrt": "TensorRT",
    "openvino": "OpenVINO",
}


def format_catalogue() -> list[dict[str, Any]]:
    """Every format (what `GET /api/export/formats` lists), as the plan's registry lists them:
    `name` (the id a create request sends), `display_name`, `available`; then, for the formats
    Orchard produces, `id`, `extension`, `description`, `validation` (what the check after the
    export compares) and the options with their defaults. The plan's formats Orchard does not
    produce (TensorRT, OpenVINO) are listed with `available: false`."""
    catalogue = []
    for spec in FORMATS.values():
        options = []
        for option in spec.options:
            entry: dict[str, Any] = {
                "name": option.name,
                "type": option.type,
                "default": option.default,
                "description": option.description,
                **option.constraints,
                "available": True,
            }
            options.append(entry)
        catalogue.append(
            {
                "name": spec.id,
                "display_name": spec.name,
                "available": True,
                "id": spec.id,
                "extension": spec.extension,
                "description": spec.description,
                "validation": spec.parity_check,
                "options": options,
            }
        )
    for fmt, display in UNAVAILABLE_FORMATS.items():
        catalogue.append(
            {
                "name": fmt,
                "display_name": display,
                "available": False,
                "id": fmt,
                "extension": "",
                "description": f"{display} is not produced by this server.",
                "validation": "",
                "options": [],
            }
        )
    return catalogue


# --- validation ---------------------------------------------------------------------------------


def _fail(option: str, message: str) -> ValidationFailed:
    return ValidationFailed.for_field(f"options.{option}", message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def normalize_options(
    fmt: str, options: dict[str, Any] | None, *, sample_shape: list[int] | None
) -> dict[str, Any]:
    """The complete options of an export of `fmt` for a network taking samples of `sample_shape`.

    `sample_shape` is the shape of one sample without the batch dimension, or None for a network
    that cannot be exported to a graph (several inputs or outputs).
    """
    spec = FORMATS.get(fmt)
    if spec is None:
        raise ValidationFailed.for_field(
            "format", f"Unknown format {fmt!r} (known: {', '.join(FORMATS)})."
        )
    options = dict(options or {})
    known = [option.name for option in spec.options]
    unknown = sorted(set(options) - set(known))
    if unknown:
        allowed = ", ".join(known) if known else "none"
        raise _fail(unknown[0], f"Unknown option for format {fmt} (options: {allowed}).")
    if known and sample_shape is None:
        raise ValidationFailed.for_field(
            "format",
            f"{spec.name} exports need a network with exactly one input and one output brick; "
            "export its weights as safetensors instead.",
        )
    result: dict[str, Any] = {}
    if "input_shape" in known:
        result["input_shape"] = _input_shape(options.get("input_shape"), sample_shape or [])
    if fmt == ExportFormat.ONNX:
        opset = options.get("opset_version", ONNX_OPSET_DEFAULT)
        if not _is_int(opset) or not ONNX_OPSET_MIN <= opset <= ONNX_OPSET_MAX:
            raise _fail(
                "opset_version",
                f"Must be an integer from {ONNX_OPSET_MIN} to {ONNX_OPSET_MAX}.",
            )
        result["opset_version"] = opset
        axes = options.get("dynamic_axes")
        result["dynamic_axes"] = _dynamic_axes(
            DEFAULT_DYNAMIC_AXES if axes is None else axes, len(result["input_shape"])
        )
        simplify = options.get("simplify", False)
        if not isinstance(simplify, bool):
            raise _fail("simplify", "Must be true or false.")
        result["simplify"] = simplify
    return result


def _input_shape(value: Any, sample_shape: list[int]) -> list[int]:
    if value is None:
        return [1, *sample_shape]
    if (
        not isinstance(value, list)
        or not 2 <= len(value) <= MAX_INPUT_RANK
        or not all(_is_int(v) and v >= 1 for v in value)
    ):
        raise _fail(
            "input_shape",
            f"Must be a list of 2 to {MAX_INPUT_RANK} positive integers, batch first "
            "(e.g. [1, 3, 224, 224]).",
        )
    if math.prod(value) > MAX_INPUT_ELEMENTS:
        raise _fail(
            "input_shape", f"An example input may hold at most {MAX_INPUT_ELEMENTS} values."
        )
    expected = math.prod(sample_shape)
    if math.prod(value[1:]) != expected:
        raise _fail(
            "input_shape",
            f"{value} does not fit the model: one sample holds {expected} values "
            f"(shape {list(sample_shape)}), so use e.g. {[1, *sample_shape]}.",
        )
    return list(value)


def _dynamic_axes(value: Any, input_rank: int) -> dict[str, dict[str, str]]:
    if not isinstance(value, dict):
        raise _fail("dynamic_axes", 'Must be an object such as {"input": {"0": "batch"}}.')
    result: dict[str, dict[str, str]] = {}
    for name, spec in value.items():
        rank = {"input": input_rank, "output": OUTPUT_RANK}.get(name)
        if rank is None:
            raise _fail("dynamic_axes", f"Unknown tensor {name!r}: use 'input' and 'output'.")
        if isinstance(spec, list):
            if not all(_is_int(axis) for axis in spec):
                raise _fail("dynamic_axes", f"{name}: a list of axes holds integers only.")
            spec = {str(axis): f"{name}_dim{axis}" for axis in spec}
        if not isinstance(spec, dict):
            raise _fail("dynamic_axes", f"{name}: must map axes to labels, or list axes.")
        axes: dict[str, str] = {}
        for axis, label in spec.items():
            try:
                index = int(axis)
            except (TypeError, ValueError):
                index = -1
            if str(index) != str(axis).strip() or not 0 <= index < rank:
                raise _fail(
                    "dynamic_axes", f"{name}: axis {axis!r} is not an axis from 0 to {rank - 1}."
                )
            if not isinstance(label, str) or not _AXIS_NAME.match(label):
                raise _fail(
                    "dynamic_axes",
                    f"{name}: axis {index} needs a label of letters, digits and underscores.",
                )
            axes[str(index)] = label
        if axes:
            result[name] = dict(sorted(axes.items(), key=lambda item: int(item[0])))
    return result


def batch_is_dynamic(options: dict[str, Any]) -> bool:
    """Whether the exported file accepts any batch size (TorchScript traces always do here)."""
    if "dynamic_axes" not in options:
        return True
    return "0" in (options["dynamic_axes"].get("input") or {})
