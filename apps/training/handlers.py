"""Task kinds of the training studio: `studio_train` (a run) and `studio_evaluate`.

A run's handler loads the experiment's subsets as NumPy arrays, trains the run's cluster with
the clusters' training service (`apps.clusters.training`) and, after every epoch, records an `epoch_end` event (stored for replay and
published to the task's channel-layer group), writes the run's `last` checkpoint (and `best` when
the chosen metric improved) and its resume state (weights, optimizer, epoch). A stopped or failed
run resumes from that state. Events: `status` (running / stopped), `epoch_end`, `complete`, `error`;
their data carries `run_id`, and the published message `type` and `seq`. What a run records is
written by `apps.training.reporting`; `studio_evaluate` lives in `apps.training.evaluate`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from apps.clusters.training import TrainingCallbacks
from apps.core.exceptions import OrchardError, ValidationFailed
from apps.tasks import registry
from apps.training.evaluate import studio_evaluate
from apps.training.models import Run, RunStatus
from apps.training.reporting import (
    RunReporter,
    _retrying,
    epoch_metrics,
    read_resume,
    write_checkpoint,
    write_resume,
)

# --- reporting -----------------------------------------------------------------------------------


# --- checkpoints and resume state ----------------------------------------------------------------


# --- studio_train --------------------------------------------------------------------------------


def _load_training_data(run: Run, config: dict[str, Any]):
    """(train subset, val subset or None, input scale) of the run's configuration."""
    from apps.datasets.models import Dataset, Split
    from apps.training import data
    from ml.data import input_scale

    dataset = Dataset.objects.filter(pk=config["dataset_id"], project_id=run.project_id).first()
    if dataset is None:
        raise ValidationFailed.for_field("dataset_id", "the run's dataset was deleted.")
    split = None
    if config.get("split_id"):
        split = Split.objects.filter(pk=config["split_id"], dataset=dataset).first()
        if split is None:
            raise ValidationFailed.for_field("split_index", "the run's split was deleted.")
    input_size = list(config["input_size"])
    train_rows = data.subset_indices(dataset, split, "train" if split else "all")
    if not len(train_rows):
        raise ValidationFailed.for_field("split_index", "the split has no train items.")
    # The inputs stay in their stored dtype (uint8 pixels); `fit` converts each batch: scaled,
    # then normalised, to the numbers a float32 copy would hold.
    train = data.load_subset(dataset, input_size=input_size, indices=train_rows, stored=True)
    values = train.x.values
    scale = input_scale(train.x.convert(np.stack([values.max(), values.min()])))
    normalize = config.get("normalize") or {}
    mean, std = normalize.get("mean"), normalize.get("std")
    train.x = train.x.scaled(scale).normalized(mean, std)
    val = None
    if split is not None:
        val_rows = data.subset_indices(dataset, split, "val")
        if len(val_rows):
            val = data.load_subset(
                dataset, input_size=input_size, indices=val_rows, scale=scale, stored=True
            )
    elif config.get("val_dataset_id"):
        other = Dataset.objects.filter(
            pk=config["val_dataset_id"], project_id=run.project_id
        ).first()
        if other is not None:
            rows = data.subset_indices(other, None, "all")
            val = data.load_subset(
                other, input_size=input_size, indices=rows, scale=scale, stored=True
            )
    if val is not None:
        val.x = val.x.normalized(mean, std)
    return train, val, scale


def _device_ids(config: dict[str, Any], device: str) -> list[int] | None:
    from ml.parallel import parse_devices

    try:
        indices = parse_devices(config.get("devices") or ["cpu"], gpu_count=1_000)
    except ValueError:
        return None
    if not indices or len(indices) < 2 or device != f"gpu:{indices[0]}":
        return None
    return indices


def studio_train(ctx) -> dict[str, Any]:
    """The handler of a run; records `error` before failing so SSE clients learn why."""
    from apps.tasks.context import TaskStopped

    run = Run.objects.select_related("cluster").get(task_id=ctx.task.pk)
    config = run.config or {}
    reporter = RunReporter(
        ctx,
        run_id=run.pk,
        epochs=max(1, int(config.get("epochs") or 1)),
        batches=1,
        stop_every=1,
    )
    try:
        return _train(ctx, run, reporter)
    except TaskStopped:
        raise
    except Exception as exc:
        if not ctx.lost:
            message = (
                exc.message if isinstance(exc, OrchardError) else f"{type(exc).__name__}: {exc}"
            )
            reporter.record("error", {"status": "failed", "run_id": run.pk, "message": message})
        raise
    finally:
        reporter.close()


class RunCallbacks(TrainingCallbacks):
    """A run's side of the training service: `epoch_end` events with the best epoch so far, the
    run's `last` (and `best`) checkpoints and resume state after every epoch, and no new cluster
    version when the task was lost."""

    def __init__(self, ctx, run: Run, reporter: RunReporter, setup: dict[str, Any]) -> None:
        self.ctx, self.run, self.reporter, self.setup = ctx, run, reporter, setup
        self.metric = "val_accuracy" if setup["val_samples"] else "accuracy"
        self.best = setup["best"]
        self.early_stopping = setup["early_stopping"]
        self.base_meta: dict[str, Any] = {}
        self.last_result = None
        self.is_best = False

    def on_start(self, start_epoch: int) -> None:
        from apps.clusters.runtime import cluster_metadata

        run, config = self.run, self.run.config
        self.reporter.start(
            start_epoch,
            epochs=self.setup["epochs"],
            resumed_from_epoch=start_epoch if self.setup["resumed"] else None,
            attempt=self.ctx.attempt,
            train_samples=self.setup["train_samples"],
            val_samples=self.setup["val_samples"],
            best_metric=self.metric,
        )
        self.base_meta = {
            **cluster_metadata(run.cluster),  # its config holds the recorded input_scale
            "run_id": run.pk,
            "experiment_id": run.experiment_id,
            "input_size": list(config["input_size"]),
            "input_scale": self.setup["scale"],
            "class_names": list(config.get("class_names") or []),
            "normalize": config.get("normalize") or {"mean": None, "std": None},
        }

    def should_stop(self) -> bool:
        return self.reporter.should_stop()

    def on_epoch_end(self, result) -> None:
        value, best = getattr(result, self.metric), self.best
        self.is_best = value is not None and (best["value"] is None or value > best["value"])
        if self.is_best:
            best.update(epoch=result.epoch, value=value)
        self.last_result = result
        self.reporter.on_epoch_end(result, best_epoch=best["epoch"], is_best=self.is_best)

    def on_checkpoint(self, epoch: int, model_state: dict, optimizer_state: dict) -> None:
        from django.utils import timezone

        from apps.clusters.training import checkpoint_payload

        run, best, result = self.run, self.best, self.last_result
        meta = {**self.base_meta, "epoch": epoch, "metrics": result.as_dict() if result else {}}
        payload = checkpoint_payload(model_state, meta)
        fields: dict[str, Any] = {
            "epochs_completed": epoch,
            "last_checkpoint_id": write_checkpoint(run, run.cluster, "last", payload, meta),
        }
        run.last_checkpoint_id = fields["last_checkpoint_id"]
        if self.is_best or run.best_checkpoint_id is None:
            fields["best_checkpoint_id"] = write_checkpoint(run, run.cluster, "best", payload, meta)
            run.best_checkpoint_id = fields["best_checkpoint_id"]
        fields.update(best_epoch=best["epoch"], best_value=best["value"], best_metric=self.metric)
        write_resume(
            run,
            model_state,
            optimizer_state,
            {
                "epoch": epoch,
                "best_epoch": best["epoch"],
                "best_value": best["value"],
                "input_scale": self.setup["scale"],
                "early_stopping": dict(self.early_stopping),
            },
        )
        _retrying(lambda: Run.objects.filter(pk=run.pk).update(**fields, updated_at=timezone.now()))

    def may_store(self) -> bool:
        return not self.ctx.lost


def _train_config(ctx, config: dict[str, Any]):
    from apps.training.validation import train_options
    from ml.training import TrainConfig

    return TrainConfig(
        epochs=int(config["epochs"]),
        batch_size=int(config["batch_size"]),
        learning_rate=float(config["learning_rate"]),
        optimizer=config["optimizer"],
        weight_decay=float(config.get("weight_decay") or 0.0),
        scheduler=config.get("scheduler") or None,
        seed=config.get("seed"),
        device=ctx.device,
        **train_options(dict(config.get("options") or {})),
    )


def _train(ctx, run: Run, reporter: RunReporter) -> dict[str, Any]:
    from apps.clusters.training import ResumePoint, TrainingJob, cluster_train
    from ml.augment import make_augment

    config = dict(run.config)
    cluster = run.cluster
    if cluster is None:
        raise ValidationFailed.for_field("cluster_id", "the run's model was deleted.")
    train, val, scale = _load_training_data(run, config)
    train_config = _train_config(ctx, config)
    job = TrainingJob(
        config=train_config,
        x=train.x,
        y=train.y,
        x_val=val.x if val is not None else None,
        y_val=val.y if val is not None else None,
        record_input_scale=scale,
        initial_weights=True,
        freeze_backbone=bool((config.get("options") or {}).get("freeze_backbone")),
        augment=make_augment(config.get("augmentation") or {}, tuple(config["input_size"])),
        device_ids=_device_ids(config, ctx.device),
    )
    best = {"epoch": run.best_epoch, "value": run.best_value}
    resume = read_resume(run)
    if resume is not None:
        model_state, optimizer_state, meta = resume
        job.resume = ResumePoint(model_state, optimizer_state, int(meta.get("epoch", 0)))
        best = {"epoch": meta.get("best_epoch"), "value": meta.get("best_value")}
        job.early_stopping = dict(meta.get("early_stopping") or {})
    batches = max(1, math.ceil(len(train.x) / train_config.batch_size))
    reporter.polls_per_epoch = max(1, batches // max(1, train_config.stop_check_every))
    callbacks = RunCallbacks(
        ctx,
        run,
        reporter,
        {
            "epochs": train_config.epochs,
            "resumed": resume is not None,
            "train_samples": len(train.x),
            "val_samples": len(val.x) if val is not None else 0,
            "scale": scale,
            "best": best,
            "early_stopping": job.early_stopping,
        },
    )
    outcome = cluster_train(cluster=cluster, job=job, callbacks=callbacks)
    result, start_epoch = outcome.fit, job.resume.epoch if job.resume else 0
    summary: dict[str, Any] = {
        "run_id": run.pk,
        "epochs_completed": result.epochs_completed,
        "resumed_from_epoch": start_epoch if resume is not None else None,
        "best_epoch": best["epoch"],
        "best_metric": callbacks.metric,
        "best_value": best["value"],
        "input_scale": scale,
        "stopped": result.stopped,
        "early_stopped": result.early_stopped,
    }
    if ctx.lost:
        return summary
    if result.stopped:
        _record_stop(ctx, run, reporter, result.epochs_completed)
        return summary
    summary["cluster_version"] = outcome.cluster_version
    last = result.last
    if last is not None:
        summary["final"] = last.as_dict()
        summary["final_metrics"] = epoch_metrics(last)
    reporter.record("complete", {"status": "completed", **summary})
    return summary


def _record_stop(ctx, run: Run, reporter: RunReporter, epochs_completed: int) -> None:
    """A stopped run's last event: `error` when it ran out of time, else `status` stopped."""
    if ctx.time_limit_exceeded:
        reporter.record(
            "error",
            {
                "status": "failed",
                "run_id": run.pk,
                "message": f"Time limit of {ctx.kind.time_limit_s} s exceeded.",
                "epochs_completed": epochs_completed,
            },
        )
    else:
        reporter.record(
            "status",
            {
                "status": RunStatus.STOPPED.value,
                "run_id": run.pk,
                "epochs_completed": epochs_completed,
            },
        )


# --- studio_evaluate -----------------------------------------------------------------------------


def register_kinds() -> None:
    from apps.training.services import EVALUATE_KIND, TRAIN_KIND

    registry.register(TRAIN_KIND, studio_train, time_limit_s=24 * 3600, max_attempts=3)
    registry.register(EVALUATE_KIND, studio_evaluate, time_limit_s=3600, max_attempts=2)
