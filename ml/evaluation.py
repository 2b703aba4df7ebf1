"""Losses and evaluation of :mod:`ml.training`: one optimisation step (:func:`train_step`), the
loss and accuracy of a labelled set (:func:`evaluate`), and the per-epoch validation scores and
label checks :func:`ml.training.fit` uses.

Like the loop, evaluation keeps its sums on the device and reads them back once per set.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ml.data import DeviceInputs, StoredInputs, model_device, training_tensors

if TYPE_CHECKING:
    from ml.training import TrainConfig

__all__ = [
    "LOSSES",
    "autocast",
    "check_targets",
    "evaluate",
    "evaluate_scores",
    "evaluate_tensors",
    "focal_loss",
    "loss_function",
    "regression_hits",
    "train_step",
]

LOSSES = ("cross_entropy", "mse", "focal", "label_smoothing")


def autocast(precision: str, device: torch.device):
    """The autocast context of a precision (a no-op for "32")."""
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class NonFiniteStep(ValueError):
    """A training step whose loss or gradients are not finite: refused, the model unchanged."""


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor | Mapping[str, Tensor],
    y: Tensor | Mapping[str, Tensor],
    *,
    loss: str = "auto",
) -> float:
    """Run one optimisation step on one batch and return its loss (one device sync).

    ``x`` and ``y`` must already be on the model's device. For dict-output networks (several
    output bricks) ``y`` is a dict keyed by output name and the losses are summed. ``loss``:
    ``"auto"`` uses cross entropy, on class indices (integer ``y``) or on one-hot / probability
    rows (float ``y`` shaped like the output); ``"cross_entropy"`` is the same; ``"mse"`` is
    mean squared error.
    """
    if loss not in ("auto", *LOSSES):
        raise ValueError(f"loss must be 'auto' or one of {', '.join(LOSSES)}")
    if not model.training:
        model.train()
    # Running statistics (batch norm) move in the forward pass: kept to undo a refused step.
    saved_buffers = [b.detach().clone() for b in model.buffers()]
    out = model(x)
    if isinstance(out, Mapping):
        if not isinstance(y, Mapping):
            raise ValueError("this network has several outputs: pass y as a dict keyed by name")
        missing = [name for name in out if name not in y]
        if missing:
            raise ValueError(f"missing expected values for output(s): {', '.join(missing)}")
        losses = [_step_loss(out[name], y[name], loss) for name in out]
        value = losses[0]
        for extra in losses[1:]:
            value = value + extra
    else:
        if isinstance(y, Mapping):
            if len(y) != 1:
                raise ValueError("this network has one output: pass y as a tensor")
            y = next(iter(y.values()))
        value = _step_loss(out, y, loss)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    # One sync for both: a loss or gradient that overflowed (inputs near float32's limit) would
    # turn every weight into NaN for good; such a step changes nothing and raises.
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else value.detach().new_zeros(())
    loss_value, grad_norm = torch.stack([value.detach().float(), norm.float()]).tolist()
    if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        if saved_buffers:
            with torch.no_grad():
                for buffer, before in zip(model.buffers(), saved_buffers, strict=True):
                    buffer.copy_(before)
        raise NonFiniteStep(
            "the step's loss or gradients are not finite numbers (values too large?); "
            "the model was not changed."
        )
    optimizer.step()
    return loss_value


def evaluate(
    model: nn.Module,
    x: np.ndarray | Tensor | StoredInputs,
    y: np.ndarray | Tensor,
    *,
    loss: str = "cross_entropy",
    batch_size: int = 1024,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on a labelled set, on the model's device."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}")
    device = model_device(model)
    task = "regression" if loss == "mse" else "classification"
    xt, yt = training_tensors(x, y, device=device, task=task)
    yt = check_targets(model, xt, yt, loss)
    return evaluate_tensors(model, xt, yt, loss, batch_size)


def focal_loss(out: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Focal loss (Lin et al.): cross entropy down-weighted by (1 - p_true)**gamma."""
    log_p = F.log_softmax(out, dim=1).gather(1, target.reshape(-1, 1).long()).squeeze(1)
    return (-((1.0 - log_p.exp()) ** gamma) * log_p).mean()


def loss_function(loss: str, label_smoothing: float = 0.1) -> Callable[[Tensor, Tensor], Tensor]:
    """The training loss of a ``TrainConfig.loss`` name (cross entropy for an unknown one)."""
    if loss == "mse":
        return F.mse_loss
    if loss == "focal":
        return focal_loss
    if loss == "label_smoothing":
        smoothing = float(label_smoothing)
        return lambda out, target: F.cross_entropy(out, target, label_smoothing=smoothing)
    return F.cross_entropy


def evaluate_scores(
    model: nn.Module, x: DeviceInputs, y: Tensor, config: TrainConfig, batch_size: int
) -> tuple[float, float, dict[str, float]]:
    """Validation loss, accuracy and (classification) macro F1 / precision / recall: the class
    predictions stay on the device and one confusion matrix is read back."""
    n = x.shape[0]
    if n == 0 or config.loss == "mse":
        loss, accuracy = evaluate_tensors(model, x, y, config.loss, batch_size)
        return loss, accuracy, {}
    loss_fn = loss_function(config.loss, config.label_smoothing)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(config.precision, x.device):
            loss_sum = torch.zeros((), device=x.device)
            preds = []
            width = 0
            for start in range(0, n, batch_size):
                out = model(x[start : start + batch_size]).float()
                width = out.shape[1]
                loss_sum += loss_fn(out, y[start : start + batch_size]) * out.shape[0]
                preds.append(out.argmax(dim=1))
            pred = torch.cat(preds)
            matrix = torch.bincount(y.long() * width + pred, minlength=width * width)
            loss_total = float(loss_sum)
            confusion = matrix.reshape(width, width).double().cpu()
    finally:
        model.train(was_training)
    tp = confusion.diagonal()
    support, predicted = confusion.sum(1), confusion.sum(0)
    present = support > 0
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), 0 * tp)
    k = max(1, int(present.sum()))
    scores = {
        "val_f1": float(f1[present].sum()) / k,
        "val_precision": float(precision[present].sum()) / k,
        "val_recall": float(recall[present].sum()) / k,
    }
    return loss_total / n, float(tp.sum()) / n, scores


def _class_hits(out: Tensor, target: Tensor) -> Tensor:
    return (out.argmax(dim=1) == target).sum()


def regression_hits(out: Tensor, target: Tensor) -> Tensor:
    """Argmax agreement for multi-column targets; |error| < 0.5 for single-column ones."""
    if out.shape[1] > 1:
        return (out.argmax(dim=1) == target.argmax(dim=1)).sum()
    return ((out - target).abs() < 0.5).sum()


def evaluate_tensors(
    model: nn.Module, x: DeviceInputs, y: Tensor, loss: str, batch_size: int
) -> tuple[float, float]:
    n = x.shape[0]
    if n == 0:
        return 0.0, 0.0
    loss_fn = loss_function(loss)
    hits = regression_hits if loss == "mse" else _class_hits
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            loss_sum = torch.zeros((), device=x.device)
            correct = torch.zeros((), device=x.device, dtype=torch.int64)
            for start in range(0, n, batch_size):
                out = model(x[start : start + batch_size])
                target = y[start : start + batch_size]
                loss_sum += loss_fn(out, target) * out.shape[0]
                correct += hits(out, target)
            total_loss, total_correct = torch.stack((loss_sum, correct.to(loss_sum.dtype))).tolist()
    finally:
        model.train(was_training)
    return total_loss / n, total_correct / n


def check_targets(model: nn.Module, x: DeviceInputs, y: Tensor, loss: str) -> Tensor:
    """Check labels against the model's output width once, before training (one sync).

    An out-of-range class index would otherwise fail deep inside cross entropy (and, on CUDA,
    poison the device context). Returns ``y``, reshaped to ``(n, 1)`` for 1-D regression targets.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(x[:2])
    finally:
        model.train(was_training)
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise ValueError("fit and evaluate need a model that returns one (batch, outputs) tensor")
    width = out.shape[1]
    if loss == "mse":
        if y.dim() == 1:
            y = y.unsqueeze(1)
        if tuple(y.shape[1:]) != (width,):
            raise ValueError(
                f"regression targets have shape {tuple(y.shape[1:])} per sample "
                f"but the model outputs {width} values"
            )
        return y
    if y.numel():
        top = int(y.max())
        if top >= width:
            raise ValueError(f"labels go up to {top} but the model has only {width} outputs")
    return y


def _step_loss(out: Tensor, y: Tensor, loss: str) -> Tensor:
    if loss == "mse":
        return F.mse_loss(out, y.reshape(out.shape).to(out.dtype))
    if loss == "focal":
        return focal_loss(out, y.reshape(-1).long())
    if loss == "label_smoothing":
        return F.cross_entropy(out, y.reshape(-1).long(), label_smoothing=0.1)
    if y.is_floating_point() and y.shape == out.shape:
        return F.cross_entropy(out, y)  # one-hot or probability rows
    return F.cross_entropy(out, y.reshape(-1).long())
