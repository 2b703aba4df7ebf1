"""The built-in task kinds: `train` (fit a cluster on a dataset) and `request` (batch inference).

Both use `ml/` for the numerics; this module only moves data between storage, the cluster and the
task context. Registered in `ClustersConfig.ready()`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from apps.clusters.selectors import stored_input_scale
from apps.clusters.training import (
    ResumePoint,
    TrainingCallbacks,
    TrainingJob,
    cluster_train,
    scaled_rows,
    training_inputs,
    training_scale,
)
from apps.core.exceptions import ValidationFailed
from apps.tasks import registry

# Defaults reach >= 97 % on the 8x8 digits with a 64 -> 128 -> 10 template in a few seconds.
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 32,
    "learning_rate": 2e-3,
    "optimizer": "adam",
    "seed": 0,
}
# Training options that are not `ml.training.TrainConfig` fields.
TRAIN_EXTRA = ("input_scale",)
REQUEST_CHUNK = 8192


# --- shared helpers ------------------------------------------------------------------------------


def _sample_size(shape) -> int:
    return int(math.prod(int(v) for v in shape)) if shape else 1


def _check_fit(cluster, dataset) -> None:
    inputs = (cluster.shape or {}).get("inputs") or {}
    if len(inputs) != 1:
        raise ValidationFailed.for_field(
            "cluster_id", "Tasks need a cluster with exactly one input brick."
        )
    expected = next(iter(inputs.values()))
    got = _sample_size(dataset.input_shape)
    if int(expected) != got:
        raise ValidationFailed.for_field(
            "dataset_id",
            f"The dataset has {got} input values per sample, the cluster's input takes {expected}.",
        )


# --- train ---------------------------------------------------------------------------------------


def _train_config(params: dict[str, Any], device: str):
    from ml.training import TrainConfig

    options = {**TRAIN_DEFAULTS, **{k: v for k, v in params.items() if k not in TRAIN_EXTRA}}
    options["device"] = device
    try:
        return TrainConfig.from_dict(options)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed.for_field("params", str(exc)) from None


def _cluster_and_dataset(ctx):
    from apps.clusters.selectors import task_cluster
    from apps.datasets.selectors import task_dataset

    return task_cluster(ctx.task), task_dataset(ctx.task)


def validate_train(*, params: dict[str, Any], cluster, dataset) -> None:
    _train_config(params, "cpu")
    if cluster is not None and dataset is not None:
        _check_fit(cluster, dataset)
        if dataset.num_classes is None:
            raise ValidationFailed.for_field("dataset_id", "The dataset has no class labels.")


class _TrainCallbacks(TrainingCallbacks):
    """A Hanami train task's reporting: progress polls within an epoch, one stored event per
    epoch, resume files at most once per TASK_CHECKPOINT_INTERVAL_S (a lost worker redoes at
    most that much work)."""

    def __init__(self, ctx, *, epochs: int, polls_per_epoch: int, scale: float) -> None:
        from apps.tasks.services import setting

        self.ctx, self.epochs, self.polls_per_epoch, self.scale = (
            ctx,
            epochs,
            polls_per_epoch,
            scale,
        )
        self.epoch, self.polls = 0, 0
        self.history: list[dict[str, Any]] = []
        self.interval = setting("TASK_CHECKPOINT_INTERVAL_S")
        self.last_save = time.monotonic()

    def on_start(self, start_epoch: int) -> None:
        self.epoch = start_epoch

    def should_stop(self) -> bool:
        self.polls += 1
        within = min(0.99, self.polls / self.polls_per_epoch)
        self.ctx.progress((self.epoch + within) / self.epochs, epoch=self.epoch + 1)
        return self.ctx.should_stop()

    def on_epoch_end(self, result) -> None:
        self.epoch, self.polls = result.epoch, 0
        metrics = result.as_dict()
        self.history.append(metrics)
        self.ctx.progress(result.epoch / self.epochs, epoch=result.epoch, loss=result.loss)
        # Keyed: an epoch redone after a resume is stored and published once.
        self.ctx.record("epoch", metrics, key="epoch")

    def wants_checkpoint(self, epoch: int) -> bool:
        # Not after the last epoch (the weights are stored right after), at most once per interval.
        if epoch >= self.epochs or time.monotonic() - self.last_save < self.interval:
            return False
        self.last_save = time.monotonic()
        return True

    def on_checkpoint(self, epoch: int, model_state: dict, optim_state: dict) -> None:
        from ml.checkpoints import pack_training_state

        payload, meta = pack_training_state(model_state, optim_state)
        self.ctx.save_resume(payload, {**meta, "epoch": epoch, "scale": self.scale})


def _resume_point(ctx) -> ResumePoint | None:
    from ml.checkpoints import unpack_training_state

    resume = ctx.load_resume()
    if resume is None:
        return None
    state, meta = resume
    model_state, optimizer_state = unpack_training_state(state, meta)
    return ResumePoint(model_state, optimizer_state, int(meta.get("epoch", 0)))


def train(ctx) -> dict[str, Any]:
    """Fit the cluster on the dataset through `cluster_train` (resume files, the input scale in
    the cluster's config, the weights stored as its next version)."""
    from apps.datasets.selectors import dataset_arrays

    cluster, dataset = _cluster_and_dataset(ctx)
    _check_fit(cluster, dataset)
    config = _train_config(ctx.params, ctx.device)
    x_raw, y = dataset_arrays(dataset)
    if y is None:
        raise ValidationFailed.for_field("dataset_id", "The dataset has no labels.")
    scale = float(ctx.params.get("input_scale") or training_scale(cluster, x_raw))
    # Float32 data: mapped or scaled rows; other stored dtypes (uint8 MNIST) stay as stored and
    # `fit` converts each batch (no float32 copy of the whole set).
    x = training_inputs(x_raw, scale)
    batches = max(1, math.ceil(len(x) / config.batch_size))
    callbacks = _TrainCallbacks(
        ctx,
        epochs=config.epochs,
        polls_per_epoch=max(1, batches // max(1, config.stop_check_every)),
        scale=scale,
    )
    point = _resume_point(ctx)
    if point is not None:  # also a resume at epoch 0 (a worker stopped inside the first epoch)
        ctx.record("resumed", {"epoch": point.epoch, "attempt": ctx.attempt})
    job = TrainingJob(config, x=x, y=np.array(y), record_input_scale=scale, resume=point)
    outcome = cluster_train(cluster=cluster, job=job, callbacks=callbacks)
    fit_result = outcome.fit
    summary: dict[str, Any] = {
        "epochs_completed": fit_result.epochs_completed,
        "resumed_from_epoch": point.epoch if point is not None else 0,
        "stopped": fit_result.stopped,
        "history": callbacks.history,
        "config": config.to_dict(),
        "input_scale": scale,
    }
    if fit_result.stopped:
        if ctx.interrupted:
            # The worker shuts down and the task is re-queued: keep what was learnt. An interrupted
            # epoch is not counted, so the next attempt redoes it from these weights.
            from ml.checkpoints import cpu_copy

            callbacks.on_checkpoint(
                fit_result.epochs_completed,
                cpu_copy(outcome.model.state_dict()),
                cpu_copy(fit_result.optimizer_state_dict()),
            )
        return summary
    summary["cluster_version"] = outcome.cluster_version
    last = fit_result.last
    if last is not None:
        summary["final_loss"], summary["final_accuracy"] = last.loss, last.accuracy
    return summary


# --- request -------------------------------------------------------------------------------------


def validate_request(*, params: dict[str, Any], cluster, dataset) -> None:
    unknown = sorted(set(params) - {"keep_logits", "batch_size"})
    if unknown:
        raise ValidationFailed.for_field("params", f"Unknown option(s): {', '.join(unknown)}.")
    if cluster is not None and dataset is not None:
        _check_fit(cluster, dataset)


def request(ctx) -> dict[str, Any]:
    """Run the cluster over the dataset's inputs; store the predicted classes as a RequestResult."""
    from apps.clusters.runtime import cluster_load_model
    from apps.clusters.services import request_result_store
    from apps.datasets.selectors import dataset_arrays
    from ml.inference import predict_logits
    from ml.training import resolve_device

    cluster, dataset = _cluster_and_dataset(ctx)
    _check_fit(cluster, dataset)
    params = ctx.params
    x_raw, _labels = dataset_arrays(dataset)
    scale = stored_input_scale(cluster=cluster) or 1.0
    model = cluster_load_model(cluster)
    device = resolve_device(ctx.device)
    model.to(device)
    batch_size = int(params.get("batch_size", 1024))
    n = len(x_raw)
    chunks = []
    for start in range(0, n, REQUEST_CHUNK):
        ctx.check()
        logits = predict_logits(
            model,
            scaled_rows(x_raw[start : start + REQUEST_CHUNK], scale),
            batch_size=batch_size,
            device=device,
        )
        chunks.append(np.asarray(logits, dtype=np.float32))
        ctx.progress(min(1.0, (start + REQUEST_CHUNK) / max(1, n)))
    out = next(iter((cluster.shape or {}).get("outputs", {}).values()), 0)
    logits = np.concatenate(chunks) if chunks else np.zeros((0, int(out)), np.float32)
    classes = logits.argmax(axis=1).astype(np.int64) if len(logits) else np.zeros(0, np.int64)
    keep = bool(params.get("keep_logits", True))
    counts = np.bincount(classes, minlength=logits.shape[1] if logits.ndim == 2 else 0)
    summary = {"class_counts": counts.tolist()}
    result = request_result_store(
        task=ctx.task,
        classes=classes,
        logits=logits if keep else None,
        summary=summary,
        dataset_id=dataset.pk,
    )
    return {"result_id": str(result.pk), "num_samples": int(n), **summary}


def register_builtin_kinds() -> None:
    from apps.clusters.services import register_cluster_kind

    registry.register("train", train, time_limit_s=6 * 3600, max_attempts=3)
    register_cluster_kind("train", needs_dataset=True, validate=validate_train)
    registry.register("request", request, time_limit_s=3600, max_attempts=3)
    register_cluster_kind("request", needs_dataset=True, validate=validate_request)
