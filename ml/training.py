"""The training loop: :func:`fit` for whole datasets, :func:`train_step` for one batch (that one,
:func:`evaluate` and the losses live in :mod:`ml.evaluation`, re-exported here).

Designed to cost only a few percent over a hand-written torch loop on the same tensors:

- the whole dataset is converted once and kept on the training device (inputs given as
  ``ml.data.StoredInputs`` stay in their stored dtype there, each batch converted as it is used);
- each epoch draws one ``torch.randperm`` and slices it into batches (no DataLoader, no
  per-sample Python);
- loss and accuracy are accumulated in device tensors and read back once per epoch (no
  ``.item()`` per batch); ``FitCallbacks.should_stop`` is polled only every
  ``stop_check_every`` batches.

Epochs are numbered from 0 inside the loop; reported epoch numbers (``EpochResult.epoch``,
``FitCallbacks.on_checkpoint``'s first argument, ``FitResult.epochs_completed``) count completed
epochs, so a checkpoint reported for epoch ``k`` resumes with
``fit(..., options=FitOptions(start_epoch=k, optimizer_state=...))``.
With a seed, every epoch's shuffling and random layers (dropout) are seeded from
``(seed, epoch)`` and the learning rate is a pure function of the epoch, so a resumed run
reproduces an uninterrupted one.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ml.callbacks import FitCallbacks
from ml.checkpoints import cpu_copy
from ml.data import DeviceInputs, StoredInputs, training_tensors
from ml.evaluation import (
    LOSSES,
    autocast,
    check_targets,
    evaluate,
    evaluate_scores,
    loss_function,
    regression_hits,
    train_step,
)

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULERS",
    "EpochResult",
    "FitCallbacks",
    "FitOptions",
    "FitResult",
    "TrainConfig",
    "evaluate",
    "fit",
    "learning_rate_at",
    "make_optimizer",
    "precision_check",
    "resolve_device",
    "train_step",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "step", "multistep", "poly")
# Training precisions (Lightning's names); "16"/"bf16" mean the mixed ones. Half precision
# ("16-mixed") autocasts on CUDA only; "bf16-mixed" autocasts on CUDA and on the CPU.
PRECISIONS = ("32", "16-mixed", "bf16-mixed")
_PRECISION_ALIASES = {"32-true": "32", "16": "16-mixed", "bf16": "bf16-mixed"}
_DEVICE_RE = re.compile(r"(cpu|cuda|gpu)(?::(\d+))?")


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run. Invalid values raise ValueError on creation.

    ``device``: ``"cpu"``, ``"cuda"`` (the current CUDA device), ``"cuda:N"`` or ``"gpu:N"``.
    ``scheduler``: None (constant rate), ``"cosine"`` (to zero over ``epochs``), ``"step"``
    (times ``gamma`` every ``step_size`` epochs; default a third of the epochs), ``"multistep"``
    (times ``gamma`` at each of ``milestones``) or ``"poly"`` (``(1 - t)**poly_power``).
    ``warmup_epochs``: the rate rises linearly over the first N epochs, then the scheduler runs
    over the remaining ones.
    ``loss``: ``"cross_entropy"`` on class indices (one-hot labels are converted), ``"focal"``
    (gamma 2), ``"label_smoothing"`` (cross entropy with ``label_smoothing``) or ``"mse"`` on
    float targets shaped like the model output.
    ``early_stopping_patience``: stop after that many epochs without the monitored loss (the
    validation loss, else the training loss) improving by ``early_stopping_min_delta``; 0: off.
    ``precision``: see PRECISIONS.
    """

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 2e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str | None = None
    seed: int | None = 0
    device: str = "cpu"
    loss: str = "cross_entropy"
    step_size: int | None = None
    gamma: float = 0.1
    milestones: list[int] | None = None
    poly_power: float = 0.9
    warmup_epochs: int = 0
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 1e-4
    label_smoothing: float = 0.1
    precision: str = "32"
    stop_check_every: int = 16
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field (the fields in the order of the three
        groups below)."""
        self._validate_optimisation()
        self._validate_schedule()
        self._validate_runtime()

    def _validate_optimisation(self) -> None:
        """Sizes, learning rate and optimizer terms, the optimizer, scheduler and loss names."""
        positive_ints = ("epochs", "batch_size", "stop_check_every", "eval_batch_size")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.learning_rate, int | float) and 0 < self.learning_rate < math.inf):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        for name in ("momentum", "weight_decay", "gamma"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < math.inf):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be None or one of {', '.join(SCHEDULERS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}")

    def _validate_schedule(self) -> None:
        """The scheduler's, early stopping's and the loss's parameters."""
        if self.step_size is not None and (
            not isinstance(self.step_size, int) or self.step_size < 1
        ):
            raise ValueError(
                f"step_size must be None or a positive integer, got {self.step_size!r}"
            )
        for name in ("warmup_epochs", "early_stopping_patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("poly_power", "early_stopping_min_delta"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < math.inf):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if not (isinstance(self.label_smoothing, int | float) and 0 <= self.label_smoothing < 1):
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.milestones is not None and (
            not isinstance(self.milestones, list | tuple)
            or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.milestones)
        ):
            raise ValueError(
                f"milestones must be a list of positive epochs, got {self.milestones!r}"
            )

    def _validate_runtime(self) -> None:
        """Precision (its alias normalised), seed and device."""
        self.precision = _PRECISION_ALIASES.get(str(self.precision), str(self.precision))
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed must be None or a non-negative integer, got {self.seed!r}")
        if not isinstance(self.device, str) or _DEVICE_RE.fullmatch(self.device.lower()) is None:
            raise ValueError(
                f"device must be 'cpu', 'cuda', 'cuda:N' or 'gpu:N', got {self.device!r}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping (e.g. JSON hyper-parameters); unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-friendly dict."""
        return asdict(self)


@dataclass
class EpochResult:
    """Metrics of one completed epoch (``epoch`` counts from 1)."""

    epoch: int
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    learning_rate: float | None = None
    val_f1: float | None = None
    val_precision: float | None = None
    val_recall: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The result as a JSON-friendly dict."""
        return asdict(self)


@dataclass
class FitResult:
    """What :func:`fit` did: completed epochs, per-epoch history, and whether it was stopped."""

    epochs_completed: int
    history: list[EpochResult]
    stopped: bool
    best_epoch: int | None
    best_val_accuracy: float | None
    optimizer: torch.optim.Optimizer = field(repr=False)
    early_stopped: bool = False

    def optimizer_state_dict(self) -> dict[str, Any]:
        """The optimizer state, to pass back as ``FitOptions.optimizer_state`` to resume."""
        return self.optimizer.state_dict()

    @property
    def last(self) -> EpochResult | None:
        """The last completed epoch of this call, if any."""
        return self.history[-1] if self.history else None


def resolve_device(spec: str | torch.device) -> torch.device:
    """Map a device string (cpu, cuda, cuda:N, gpu:N) to a ``torch.device``, checking it exists."""
    text = str(spec).strip().lower()
    match = _DEVICE_RE.fullmatch(text)
    if match is None or (match[1] == "cpu" and match[2] not in (None, "0")):
        raise ValueError(f"unknown device '{spec}': expected 'cpu', 'cuda', 'cuda:N' or 'gpu:N'")
    if match[1] == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device '{spec}' is not available: CUDA is not available on this machine")
    count = torch.cuda.device_count()
    index = int(match[2]) if match[2] is not None else torch.cuda.current_device()
    if index >= count:
        raise ValueError(
            f"device '{spec}' does not exist: this machine has {count} CUDA device(s) "
            f"(gpu:0 to gpu:{count - 1})"
        )
    return torch.device("cuda", index)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr, wd = config.learning_rate, config.weight_decay
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=wd)


def learning_rate_at(config: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch`` under ``config.scheduler`` after ``warmup_epochs``
    (stateless, for resuming): a linear warm-up to the base rate, then the schedule runs over
    the remaining epochs."""
    base = config.learning_rate
    warmup = min(config.warmup_epochs, config.epochs - 1)
    if epoch < warmup:
        return base * (epoch + 1) / (warmup + 1)
    epoch, total = epoch - warmup, max(1, config.epochs - warmup)
    if config.scheduler == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / total))
    if config.scheduler == "step":
        step = config.step_size or max(1, total // 3)
        return base * config.gamma ** (epoch // step)
    if config.scheduler == "multistep":
        milestones = config.milestones or [max(1, total // 2), max(1, (3 * total) // 4)]
        return base * config.gamma ** sum(1 for m in milestones if epoch >= m)
    if config.scheduler == "poly":
        return base * max(0.0, 1.0 - epoch / total) ** config.poly_power
    return base


@dataclass
class FitOptions:
    """What varies per call of :func:`fit` beside the hyper-parameters: where a resumed run
    starts, the batch augmentation and the GPUs to split batches across.

    ``start_epoch`` / ``optimizer_state``: resume after that many completed epochs with the
    optimizer state saved then. ``early_stopping_state`` (a dict, updated in place:
    ``best_loss``, ``bad_epochs``) carries early stopping across a resume; pass the one saved
    with the checkpoint. ``augment(batch) -> batch`` transforms each training batch on the
    device (see :mod:`ml.augment`); validation data is never augmented. ``device_ids`` (two or
    more CUDA indices, the first being ``config.device``) splits every batch across those GPUs
    with ``torch.nn.DataParallel`` (see :mod:`ml.parallel`); state dicts stay the plain model's.
    """

    start_epoch: int = 0
    optimizer_state: Mapping[str, Any] | None = None
    early_stopping_state: dict[str, Any] | None = None
    augment: Callable[[Tensor], Tensor] | None = None
    device_ids: Sequence[int] | None = None


def fit(
    model: nn.Module,
    x_train: np.ndarray | Tensor | StoredInputs,
    y_train: np.ndarray | Tensor,
    config: TrainConfig | None = None,
    *,
    x_val: np.ndarray | Tensor | StoredInputs | None = None,
    y_val: np.ndarray | Tensor | None = None,
    options: FitOptions | None = None,
    callbacks: FitCallbacks | None = None,
) -> FitResult:
    """Train ``model`` in place on a whole dataset; see the module docstring for the contract.

    ``callbacks`` (see :class:`FitCallbacks`) hear of every epoch and checkpoint and may stop
    the run: training then stops, ``FitResult.stopped`` is True and an interrupted epoch is not
    counted (the model holds its partial updates; resume from the last checkpoint).
    ``options`` (see :class:`FitOptions`) resume a run, augment batches or use several GPUs.
    Inputs given as ``StoredInputs`` (e.g. uint8 pixels and their scale) stay in their stored
    dtype on the device; every batch is converted as it is used, into the numbers the float32
    array would have held.
    """
    config = config if config is not None else TrainConfig()
    config.validate()
    options = options if options is not None else FitOptions()
    hooks = callbacks if callbacks is not None else FitCallbacks()
    start_epoch = options.start_epoch
    if not 0 <= start_epoch <= config.epochs:
        raise ValueError(f"start_epoch must be between 0 and epochs ({config.epochs})")
    device = resolve_device(config.device)
    precision_check(config.precision, device)
    x, y, val = _fit_tensors(x_train, y_train, x_val, y_val, loss=config.loss, device=device)
    model.to(device)
    runner = _parallel_runner(model, device, options.device_ids)
    y = check_targets(model, x, y, config.loss)
    if val is not None:
        val = (val[0], check_targets(model, val[0], val[1], config.loss))
    optimizer = make_optimizer(model, config)
    if options.optimizer_state is not None:
        optimizer.load_state_dict(dict(options.optimizer_state))
    n = x.shape[0]
    # Predicted class of every sample, in the epoch's order (classification only).
    predictions = None if config.loss == "mse" else torch.empty(n, dtype=torch.int64, device=device)
    history: list[EpochResult] = []
    stopped = False
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    epochs_completed = start_epoch
    early = _early_stopping_state(options.early_stopping_state)
    early_stopped = False
    scaler = _grad_scaler(config.precision, device)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        lr = learning_rate_at(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with _epoch_rng(config.seed, epoch, device):
            order = _permutation(n, config.seed, epoch, device)
            totals = _train_epoch(
                runner,
                optimizer,
                x,
                y,
                order,
                config,
                predictions,
                hooks.should_stop,
                options.augment,
                scaler,
            )
        if totals is None:
            stopped = True
            break
        train_loss, train_correct = totals
        val_loss = val_accuracy = None
        scores: dict[str, float] = {}
        if val is not None:
            val_loss, val_accuracy, scores = evaluate_scores(
                runner, val[0], val[1], config, config.eval_batch_size
            )
            if best_val_accuracy is None or val_accuracy > best_val_accuracy:
                best_epoch, best_val_accuracy = epoch + 1, val_accuracy
        epochs_completed = epoch + 1
        result = EpochResult(
            epoch=epoch + 1,
            loss=train_loss / n,
            accuracy=train_correct / n,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            seconds=time.perf_counter() - started,
            learning_rate=lr,
            **scores,
        )
        history.append(result)
        if config.early_stopping_patience:
            monitored = val_loss if val_loss is not None else result.loss
            early_stopped = _early_stopping_update(early, monitored, config)
        hooks.on_epoch_end(result)
        if hooks.wants_checkpoint(epoch + 1):
            hooks.on_checkpoint(
                epoch + 1, cpu_copy(model.state_dict()), cpu_copy(optimizer.state_dict())
            )
        if early_stopped:
            break
        if epoch + 1 < config.epochs and hooks.should_stop():
            stopped = True
            break

    return FitResult(
        epochs_completed=epochs_completed,
        history=history,
        stopped=stopped,
        best_epoch=best_epoch,
        best_val_accuracy=best_val_accuracy,
        optimizer=optimizer,
        early_stopped=early_stopped,
    )


def _fit_tensors(
    x_train: np.ndarray | Tensor | StoredInputs,
    y_train: np.ndarray | Tensor,
    x_val: np.ndarray | Tensor | StoredInputs | None,
    y_val: np.ndarray | Tensor | None,
    *,
    loss: str,
    device: torch.device,
) -> tuple[DeviceInputs, Tensor, tuple[DeviceInputs, Tensor] | None]:
    """:func:`fit`'s training set and optional validation set as tensors on ``device``
    (``StoredInputs`` in their stored dtype, as ``ConvertedBatches``)."""
    task = "regression" if loss == "mse" else "classification"
    x, y = training_tensors(x_train, y_train, device=device, task=task)
    if x.shape[0] == 0:
        raise ValueError("the training set is empty")
    val: tuple[DeviceInputs, Tensor] | None = None
    if x_val is not None or y_val is not None:
        if x_val is None or y_val is None:
            raise ValueError("x_val and y_val must be given together")
        val = training_tensors(x_val, y_val, device=device, task=task)
    return x, y, val


def _grad_scaler(precision: str, device: torch.device) -> Any:
    """The gradient scaler of float16 mixed precision on CUDA (None otherwise)."""
    return (
        torch.amp.GradScaler("cuda") if precision == "16-mixed" and device.type == "cuda" else None
    )


def _early_stopping_state(state: dict[str, Any] | None) -> dict[str, Any]:
    """The early-stopping state carried across a resume (``FitOptions.early_stopping_state``,
    completed in place), or a fresh one."""
    early = state if state is not None else {}
    early.setdefault("best_loss", None)
    early.setdefault("bad_epochs", 0)
    return early


def _early_stopping_update(early: dict[str, Any], monitored: float, config: TrainConfig) -> bool:
    """Count an epoch whose monitored loss did not improve by ``early_stopping_min_delta`` (the
    state ``early`` is updated in place); whether the patience is spent."""
    best_loss = early["best_loss"]
    if best_loss is None or monitored < best_loss - config.early_stopping_min_delta:
        early["best_loss"], early["bad_epochs"] = monitored, 0
    else:
        early["bad_epochs"] += 1
    return early["bad_epochs"] >= config.early_stopping_patience


def precision_check(precision: str, device: torch.device) -> None:
    """ValueError when ``precision`` cannot run on ``device`` (half precision needs CUDA)."""
    precision = _PRECISION_ALIASES.get(str(precision), str(precision))
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    if precision == "16-mixed" and device.type != "cuda":
        raise ValueError("precision '16-mixed' needs a CUDA GPU (use '32' or 'bf16-mixed')")
    if precision == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16-mixed' is not supported by {device}")


# --- helpers ------------------------------------------------------------------------------------


def _train_epoch(  # noqa: PLR0913
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: DeviceInputs,
    y: Tensor,
    order: Tensor,
    config: TrainConfig,
    predictions: Tensor | None,
    should_stop: Callable[[], bool] | None,
    augment: Callable[[Tensor], Tensor] | None = None,
    scaler: Any = None,
) -> tuple[float, float] | None:
    """One pass over ``x[order]``: summed loss and number of hits, or None when stopped.

    Loss and hits stay on the device until the single read-back at the end; for classification
    each batch only writes its argmax into ``predictions``, compared with the labels once.
    """
    loss_fn = loss_function(config.loss, config.label_smoothing)
    batch_size, every = config.batch_size, config.stop_check_every
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    model.train()
    for batch, start in enumerate(range(0, x.shape[0], batch_size)):
        index = order[start : start + batch_size]
        xb = x.index_select(0, index)
        if augment is not None:
            xb = augment(xb)
        yb = y.index_select(0, index)
        with autocast(config.precision, x.device):
            out = model(xb)
            loss = loss_fn(out.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        loss_sum.add_(loss.detach(), alpha=xb.shape[0])
        if predictions is None:
            correct += regression_hits(out.detach(), yb)
        else:
            torch.argmax(out.detach(), dim=1, out=predictions[start : start + batch_size])
        if should_stop is not None and (batch + 1) % every == 0 and should_stop():
            return None
    if predictions is not None:
        correct = (predictions == y.index_select(0, order)).sum()
    loss_total, hits = torch.stack((loss_sum, correct.to(loss_sum.dtype))).tolist()
    return loss_total, hits


def _parallel_runner(
    model: nn.Module, device: torch.device, device_ids: Sequence[int] | None
) -> nn.Module:
    """The module that runs forward passes: ``model``, or a DataParallel over ``device_ids``."""
    ids = [int(i) for i in (device_ids or [])]
    if len(ids) <= 1:
        return model
    if device.type != "cuda" or device.index != ids[0]:
        raise ValueError(
            f"device_ids {ids} need config.device 'cuda:{ids[0]}' (the first of them), "
            f"got '{device}'"
        )
    for index in ids:
        resolve_device(f"cuda:{index}")
    from ml.parallel import data_parallel

    return data_parallel(model, ids)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for one epoch of one run."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _permutation(n: int, seed: int | None, epoch: int, device: torch.device) -> Tensor:
    if seed is None:
        return torch.randperm(n, device=device)
    generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    order = torch.randperm(n, generator=generator)
    return order.to(device, non_blocking=True) if device.type != "cpu" else order


@contextmanager
def _epoch_rng(seed: int | None, epoch: int, device: torch.device) -> Iterator[None]:
    """Seed the global RNGs (dropout etc.) for one epoch and restore the caller's state after."""
    if seed is None:
        yield
        return
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        epoch_seed = _epoch_seed(seed, epoch) ^ 0x5DEECE66D
        torch.random.default_generator.manual_seed(epoch_seed)
        if cuda:
            torch.cuda.default_generators[device.index].manual_seed(epoch_seed)
        yield
