"""Weights and optimizer state as safetensors bytes (never pickle), and checked loading.

- :func:`state_to_bytes` / :func:`state_from_bytes`: a flat ``name -> tensor`` state dict plus
  ``str -> str`` metadata.
- :func:`optimizer_state_to_bytes` / :func:`optimizer_state_from_bytes`: a torch optimizer
  ``state_dict()`` (nested), stored as tensors plus its non-tensor parts as JSON metadata.
- :func:`load_compatible`: load weights into a model, or raise :class:`CheckpointMismatch`
  naming the first key that is missing, unexpected, or of another shape.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "CheckpointMismatch",
    "cpu_copy",
    "load_compatible",
    "optimizer_state_from_bytes",
    "optimizer_state_to_bytes",
    "pack_training_state",
    "read_metadata",
    "state_from_bytes",
    "state_to_bytes",
    "unpack_training_state",
]

_OPTIMIZER_KEY = "orchard.optimizer"
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """Bytes that are not a readable safetensors checkpoint."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint whose keys or shapes do not fit the model; ``key`` names the first problem."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def state_to_bytes(
    state_dict: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialise a flat ``name -> tensor`` state dict (any device) and metadata to safetensors."""
    meta = dict(metadata or {})
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("checkpoint metadata must map str to str")
    tensors: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, entry in state_dict.items():
        if not isinstance(entry, Tensor):
            raise TypeError(f"state dict entry '{name}' is not a tensor")
        tensor = entry.detach().to("cpu")
        # safetensors refuses views and shared storage (tied weights): give those their own copy.
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if (
            not tensor.is_contiguous()
            or ident in seen
            or tensor.untyped_storage().nbytes() != (tensor.numel() * tensor.element_size())
        ):
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        seen.add((tensor.untyped_storage().data_ptr(), int(tensor.storage_offset())))
        tensors[name] = tensor
    return safetensors_save(tensors, metadata=meta)


def state_from_bytes(data: bytes) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read tensors (on the CPU) and metadata written by :func:`state_to_bytes`."""
    metadata = read_metadata(data)
    try:
        tensors = safetensors_load(bytes(data))
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"not a safetensors checkpoint: {exc}") from exc
    return tensors, metadata


def read_metadata(data: bytes) -> dict[str, str]:
    """Only the metadata of safetensors bytes (parses the JSON header, reads no tensor)."""
    if len(data) < 8:
        raise CheckpointError("not a safetensors checkpoint: too short")
    (size,) = struct.unpack("<Q", bytes(data[:8]))
    if size > min(_MAX_HEADER, len(data) - 8):
        raise CheckpointError("not a safetensors checkpoint: bad header length")
    try:
        header = json.loads(bytes(data[8 : 8 + size]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError("not a safetensors checkpoint: unreadable header") from exc
    if not isinstance(header, dict):
        raise CheckpointError("not a safetensors checkpoint: unreadable header")
    metadata = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()}


def load_compatible(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load ``state_dict`` into ``model`` (strict), or raise :class:`CheckpointMismatch`.

    Checks every key first so that nothing is loaded when anything is wrong.
    """
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            missing = [k for k in expected if k not in state_dict]
            raise CheckpointMismatch(
                f"checkpoint is missing '{key}'" + _more(len(missing) - 1, "missing key"), key
            )
        got = tuple(state_dict[key].shape)
        if got != tuple(tensor.shape):
            raise CheckpointMismatch(
                f"parameter '{key}' has shape {got} in the checkpoint but "
                f"{tuple(tensor.shape)} in the model",
                key,
            )
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        raise CheckpointMismatch(
            f"checkpoint has unexpected key '{unexpected[0]}'"
            + _more(len(unexpected) - 1, "unexpected key"),
            unexpected[0],
        )
    model.load_state_dict(dict(state_dict), strict=True)


def _flatten_optimizer(state: Mapping[str, Any], prefix: str) -> tuple[dict[str, Tensor], dict]:
    """An optimizer ``state_dict()`` as tensors named ``<prefix><param>.<name>`` plus JSON."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state.get("state", {}).items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}{param_id}.{name}"] = value
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state.get("param_groups", []), "scalars": scalars}


def _unflatten_optimizer(
    tensors: Mapping[str, Tensor], extra: Mapping[str, Any], prefix: str
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        if key.startswith(prefix):
            param_id, name = key[len(prefix) :].split(".", 1)
            state.setdefault(int(param_id), {})[name] = tensor
    for param_id, values in (extra.get("scalars") or {}).items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": list(extra.get("param_groups") or [])}


def pack_training_state(
    model_state: Mapping[str, Tensor], optimizer_state: Mapping[str, Any]
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Model and optimizer state as one flat tensor dict plus JSON-able metadata (to resume).

    Tensors are named ``model.<key>`` and ``optim.<param>.<name>``; the metadata's
    ``"optimizer"`` entry holds the optimizer's param groups and non-tensor values.
    """
    tensors = {f"model.{k}": v for k, v in model_state.items()}
    optim_tensors, optim_meta = _flatten_optimizer(optimizer_state, "optim.")
    tensors.update(optim_tensors)
    return tensors, {"optimizer": optim_meta}


def unpack_training_state(
    tensors: Mapping[str, Tensor], metadata: Mapping[str, Any]
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The (model state, optimizer state) that :func:`pack_training_state` flattened."""
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer = _unflatten_optimizer(tensors, metadata.get("optimizer") or {}, "optim.")
    return model_state, optimizer


def optimizer_state_to_bytes(
    state: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialise an optimizer ``state_dict()`` to safetensors (tensors + JSON for the rest)."""
    tensors, extra = _flatten_optimizer(state, "state.")
    try:
        encoded = json.dumps(extra)
    except TypeError as exc:
        raise TypeError(
            f"optimizer state has values that are not JSON-serialisable: {exc}"
        ) from exc
    meta = dict(metadata or {})
    meta[_OPTIMIZER_KEY] = encoded
    return state_to_bytes(tensors, meta)


def optimizer_state_from_bytes(data: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """Rebuild an optimizer ``state_dict()`` (for ``load_state_dict``) and the other metadata."""
    tensors, metadata = state_from_bytes(data)
    encoded = metadata.pop(_OPTIMIZER_KEY, None)
    if encoded is None:
        raise CheckpointError("these bytes hold no optimizer state")
    return _unflatten_optimizer(tensors, json.loads(encoded), "state."), metadata


def _more(count: int, what: str) -> str:
    return f" (and {count} more {what}{'s' if count != 1 else ''})" if count > 0 else ""


def cpu_copy(value: Any) -> Any:
    """Deep copy of a (nested) state dict with every tensor detached and cloned to the CPU."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(cpu_copy(v) for v in value)
    return value
