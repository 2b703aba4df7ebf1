"""Small stand-ins for `ml` modules that are still being written (checkpoints, inference, metrics,
devices), installed only when the real module cannot be imported. They follow the agreed
contracts, so tests exercise the same calls; once the real modules land these are unused."""

import importlib
import sys
import types


def _checkpoints():
    from safetensors.torch import load, save

    mod = types.ModuleType("ml.checkpoints")

    class CheckpointMismatch(ValueError):
        pass

    def state_to_bytes(state_dict, metadata=None):
        return save(dict(state_dict), metadata={k: str(v) for k, v in (metadata or {}).items()})

    def state_from_bytes(data):

        import json
        import struct

        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        return load(data), header.get("__metadata__", {})

    def load_compatible(model, state_dict):
        own = model.state_dict()
        for name, tensor in own.items():
            if name not in state_dict:
                raise CheckpointMismatch(f"missing parameter '{name}'")
            if tuple(state_dict[name].shape) != tuple(tensor.shape):
                raise CheckpointMismatch(
                    f"parameter '{name}' has shape {tuple(state_dict[name].shape)}, "
                    f"expected {tuple(tensor.shape)}"
                )
        extra = sorted(set(state_dict) - set(own))
        if extra:
            raise CheckpointMismatch(f"unexpected parameter '{extra[0]}'")
        model.load_state_dict(state_dict)

    mod.CheckpointMismatch = CheckpointMismatch
    mod.state_to_bytes = state_to_bytes
    mod.state_from_bytes = state_from_bytes
    mod.load_compatible = load_compatible
    return mod


def _inference():
    import numpy as np
    import torch

    mod = types.ModuleType("ml.inference")

    @torch.no_grad()
    def predict_logits(model, x, *, batch_size=1024, device="cpu"):
        model.eval()
        model.to(device)
        outs = []
        for start in range(0, len(x), batch_size):
            xb = torch.as_tensor(np.asarray(x[start : start + batch_size]), device=device)
            outs.append(model(xb.float()).cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)

    def predict_classes(model, x, *, batch_size=1024, device="cpu"):
        return predict_logits(model, x, batch_size=batch_size, device=device).argmax(axis=1)

    mod.predict_logits = predict_logits
    mod.predict_classes = predict_classes
    return mod


def _metrics():
    import numpy as np

    mod = types.ModuleType("ml.metrics")
    mod.accuracy = lambda pred, true: float((np.asarray(pred) == np.asarray(true)).mean())
    return mod


def _devices():
    mod = types.ModuleType("ml.devices")
    mod.list_devices = lambda: {"devices": [{"id": "cpu", "kind": "cpu", "name": "CPU"}]}
    return mod


STANDINS = {
    "ml.checkpoints": _checkpoints,
    "ml.inference": _inference,
    "ml.metrics": _metrics,
    "ml.devices": _devices,
}


def install() -> list[str]:
    """Install the stand-ins whose real module is missing; returns their names."""
    installed = []
    for name, factory in STANDINS.items():
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            sys.modules[name] = factory()
            setattr(sys.modules["ml"], name.split(".")[1], sys.modules[name])
            installed.append(name)
    return installed
