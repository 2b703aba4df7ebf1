"""Batched prediction: logits, probabilities and classes for a whole array of samples.

The model runs in eval mode under ``torch.inference_mode`` (its previous mode is restored);
results come back on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ml.data import as_tensors, model_device

__all__ = ["predict_classes", "predict_logits", "predict_proba"]


def predict_logits(
    model: nn.Module,
    x: np.ndarray | Tensor,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> Tensor:
    """Raw model outputs for ``x`` as a CPU float tensor ``(n, outputs)``, in batches.

    ``device``: where to run (the model is moved there); default: where the model already is.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be a positive integer")
    target = torch.device(device) if device is not None else model_device(model)
    model.to(target)
    inputs, _ = as_tensors(x, None, device="cpu")
    was_training = model.training
    model.eval()
    chunks: list[Tensor] = []
    try:
        with torch.inference_mode():
            for start in range(0, inputs.shape[0], batch_size):
                batch = inputs[start : start + batch_size].to(target, non_blocking=True)
                out = model(batch)
                if not isinstance(out, Tensor):
                    raise ValueError("predict_* needs a model that returns one tensor")
                chunks.append(out.float().to("cpu"))
    finally:
        model.train(was_training)
    if not chunks:
        width = _output_width(model)
        return torch.empty((0, width), dtype=torch.float32)
    return torch.cat(chunks)


def predict_proba(
    model: nn.Module,
    x: np.ndarray | Tensor,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Class probabilities (softmax of the logits) as a float32 array ``(n, classes)``."""
    logits = predict_logits(model, x, batch_size=batch_size, device=device)
    return torch.softmax(logits, dim=1).numpy()


def predict_classes(
    model: nn.Module,
    x: np.ndarray | Tensor,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Predicted class index per sample as an int64 array ``(n,)``."""
    logits = predict_logits(model, x, batch_size=batch_size, device=device)
    return logits.argmax(dim=1).numpy().astype(np.int64, copy=False)


def _output_width(model: nn.Module) -> int:
    """Output width for an empty prediction: the single output brick's or last Linear's, else 0."""
    sizes = getattr(model, "output_sizes", None)
    if isinstance(sizes, dict) and len(sizes) == 1:
        return int(next(iter(sizes.values())))
    width = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            width = module.out_features
    return width
