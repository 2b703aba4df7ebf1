"""Task kinds of the training studio: `studio_train` (a run) and `studio_evaluate`.

A run's handler loads the experiment's subsets as NumPy arrays, trains the run's cluster with
the clusters' training service (`apps.clusters.training`) and, after every epoch, records an `epoch_end` event (stored for replay and
published to the task's channel-layer group), writes the run's `last` checkpoint (and `best` when
the chosen metric improved) and its resume state (weights, optimizer, epoch). A stopped or failed
run resumes from that state. Events: `status` (running / stopped), `epoch_end`, `complete`, `error`;
their data carries `run_id`, and the published message `type` and `seq`.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import uuid
from typing import Any

import numpy as np

from apps.clusters.training import TrainingCallbacks
from apps.core.exceptions import OrchardError, ValidationFailed
from apps.tasks import registry
from apps.training.models import Evaluation, Run, RunStatus

logger = logging.getLogger(__name__)

RESUME_FILE = "resume.safetensors"
EVAL_CHUNK = 8192


def _retrying(fn, *, attempts: int = 5, delay_s: float = 0.2):
    """A short DB write, retried on transient SQLite lock errors."""
    from django.db import OperationalError

    for attempt in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(delay_s * (attempt + 1))
    return None


# --- reporting -----------------------------------------------------------------------------------


class RunReporter:
    """Progress and metric events of one run, off the training thread.

    The training loop only puts items on a queue: `should_stop()` (polled every few batches)
    reads memory and queues a progress update at most every TASK_EVENT_INTERVAL_S; `record()`
    queues an event (stored as a TaskEvent and published to the task's group). One thread per
    run stores and publishes them in order; `close()` flushes the queue, so a run's last event is
    stored before the engine marks the task ended.
    """

    def __init__(self, ctx, *, run_id: str, epochs: int, batches: int, stop_every: int) -> None:
        from apps.tasks.services import setting

        self.ctx = ctx
        self.run_id = run_id
        self.epochs = epochs
        self.polls_per_epoch = max(1, batches // max(1, stop_every))
        self.epoch = 0
        self.polls = 0
        self._interval = setting("TASK_EVENT_INTERVAL_S")
        self._last_progress = 0.0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._pump, name=f"events-{run_id}", daemon=True)
        self._thread.start()

    def record(self, kind: str, data: dict[str, Any]) -> None:
        self._queue.put(("record", kind, data))

    def progress(self, fraction: float, **info: Any) -> None:
        self._queue.put(("progress", fraction, info))

    def start(self, start_epoch: int, **info: Any) -> None:
        self.epoch = start_epoch
        self.record(
            "status", {"status": "running", "run_id": self.run_id, "epoch": start_epoch, **info}
        )

    def should_stop(self) -> bool:
        self.polls += 1
        now = time.monotonic()
        if now - self._last_progress >= self._interval:
            self._last_progress = now
            within = min(0.99, self.polls / self.polls_per_epoch)
            self.progress((self.epoch + within) / self.epochs, epoch=self.epoch + 1)
        return self.ctx.should_stop()

    def on_epoch_end(self, result, **extra: Any) -> None:
        """Record the plan's `epoch_end` event: {epoch, max_epochs, metrics}."""
        self.epoch, self.polls = result.epoch, 0
        self.progress(result.epoch / self.epochs, epoch=result.epoch, loss=result.loss)
        self.record(
            "epoch_end",
            {
                "epoch": result.epoch,
                "max_epochs": self.epochs,
                "metrics": epoch_metrics(result),
                "run_id": self.run_id,
                **extra,
            },
        )

    def close(self) -> None:
        """Store and publish everything queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=60)

    def _pump(self) -> None:
        from django.db import connection

        try:
            while (item := self._queue.get()) is not None:
                try:
                    if item[0] == "record":
                        self.ctx.record(item[1], item[2])
                    else:
                        self.ctx.progress(item[1], **item[2])
                except Exception:  # an event lost must not fail the run
                    logger.warning(
                        "run %s: could not record %s", self.run_id, item[1], exc_info=True
                    )
        finally:
            connection.close()


def epoch_metrics(result) -> dict[str, Any]:
    """One epoch's metrics under the plan's names (plan/06-experiment-tracking/01)."""
    metrics = {
        "train_loss": result.loss,
        "train_accuracy": result.accuracy,
        "val_loss": result.val_loss,
        "val_accuracy": result.val_accuracy,
        "val_f1": result.val_f1,
        "val_precision": result.val_precision,
        "val_recall": result.val_recall,
        "lr": result.learning_rate,
        "duration_s": result.seconds,
    }
    return {k: v for k, v in metrics.items() if v is not None}


# --- checkpoints and resume state ----------------------------------------------------------------


def _resume_path(run: Run):
    from apps.training.services import run_dir

    return run_dir(run) / RESUME_FILE


def write_resume(run: Run, model_state: dict, optim_state: dict, meta: dict[str, Any]) -> None:
    """Weights, optimizer state and the epoch to go on from, in one file replaced atomically."""
    from apps.clusters.runtime import write_state
    from ml.checkpoints import pack_training_state

    payload, packed = pack_training_state(model_state, optim_state)
    write_state(_resume_path(run), payload, {**meta, **packed})


def read_resume(run: Run) -> tuple[dict, dict, dict[str, Any]] | None:
    """(model state, optimizer state, metadata) saved by `write_resume`, or None."""
    from apps.clusters.runtime import read_state

    path = _resume_path(run)
    if not path.exists():
        return None
    from ml.checkpoints import unpack_training_state

    state, meta = read_state(path)
    model_state, optim = unpack_training_state(state, meta)
    return model_state, optim, meta


def write_checkpoint(
    run: Run, cluster, which: str, payload: bytes, metadata: dict[str, Any]
) -> str:
    """Write the run's `best` or `last` checkpoint (an apps.clusters Checkpoint whose id stays the
    same for the whole run); returns its id."""
    from apps.clusters.selectors import checkpoint_exists
    from apps.clusters.services import checkpoint_store

    current = run.best_checkpoint_id if which == "best" else run.last_checkpoint_id
    exists = bool(current) and checkpoint_exists(project_id=run.project_id, checkpoint_id=current)
    checkpoint_id = current if exists else uuid.uuid4()
    _retrying(
        lambda: checkpoint_store(
            checkpoint_id=checkpoint_id,
            project_id=run.project_id,
            owner_id=run.owner_id,
            visibility=run.visibility,
            name=f"{run.pk}-{which}",
            cluster=cluster,
            payload=payload,
            metadata={**metadata, "which": which},
        )
    )
    return str(checkpoint_id)


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
    train = data.load_subset(dataset, input_size=input_size, indices=train_rows)
    scale = input_scale(train.x)
    if scale != 1.0:
        train.x *= np.float32(scale)
    normalize = config.get("normalize") or {}
    data.normalize(train.x, normalize.get("mean"), normalize.get("std"))
    val = None
    if split is not None:
        val_rows = data.subset_indices(dataset, split, "val")
        if len(val_rows):
            val = data.load_subset(dataset, input_size=input_size, indices=val_rows, scale=scale)
            data.normalize(val.x, normalize.get("mean"), normalize.get("std"))
    elif config.get("val_dataset_id"):
        other = Dataset.objects.filter(
            pk=config["val_dataset_id"], project_id=run.project_id
        ).first()
        if other is not None:
            rows = data.subset_indices(other, None, "all")
            val = data.load_subset(other, input_size=input_size, indices=rows, scale=scale)
            data.normalize(val.x, normalize.get("mean"), normalize.get("std"))
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
    from apps.training.services import train_options
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


def _save_npy(path, array) -> None:
    """One NumPy array (no pickle), written atomically."""
    import io

    from apps.clusters.runtime import atomic_write

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    atomic_write(path, buffer.getvalue())


def studio_evaluate(ctx) -> dict[str, Any]:
    """Measure a run's checkpoint on a dataset subset; per-item arrays go to .npy files."""
    import torch

    from apps.clusters.runtime import build_module, read_state
    from apps.clusters.services import checkpoint_path
    from apps.training import data
    from apps.training.services import evaluation_dir
    from ml.inference import predict_logits
    from ml.metrics import classification_report

    evaluation = Evaluation.objects.select_related("checkpoint", "dataset", "split").get(
        task_id=ctx.task.pk
    )
    checkpoint = evaluation.checkpoint
    if checkpoint is None:
        raise ValidationFailed.for_field("checkpoint", "the checkpoint was deleted.")
    dataset = evaluation.dataset
    if dataset is None:
        raise ValidationFailed.for_field("dataset_id", "the dataset was deleted.")
    if evaluation.split_index is not None and evaluation.split is None:
        raise ValidationFailed.for_field("split_index", "the split was deleted.")
    path = checkpoint_path(str(checkpoint.project_id), str(checkpoint.pk))
    if not path.exists():
        raise ValidationFailed.for_field("checkpoint", "the checkpoint's file is missing.")
    state, meta = read_state(path)
    model = build_module(
        source=meta["source"], template=meta.get("template", ""), config=meta["config"]
    )
    model.load_state_dict(state)
    input_size = list(meta.get("input_size") or data.default_input_size(dataset))
    scale = float(meta.get("input_scale") or 1.0)
    class_names = list(meta.get("class_names") or dataset.class_names)
    num_classes = len(class_names)

    indices = data.subset_indices(dataset, evaluation.split, evaluation.split_subset)
    subset = data.load_subset(dataset, input_size=input_size, indices=indices, scale=scale)
    normalize = meta.get("normalize") or {}
    data.normalize(subset.x, normalize.get("mean"), normalize.get("std"))
    _retrying(
        lambda: Evaluation.objects.filter(pk=evaluation.pk).update(num_samples=len(indices))
    )  # the total of the plan's progress {processed, total}
    ctx.record("status", {"status": "running", "num_samples": len(indices)})
    chunks = []
    n = len(subset.x)
    for start in range(0, n, EVAL_CHUNK):
        ctx.check()
        chunks.append(
            predict_logits(
                model,
                subset.x[start : start + EVAL_CHUNK],
                batch_size=evaluation.batch_size,
                device="cpu" if ctx.device == "cpu" else ctx.device.replace("gpu", "cuda"),
            )
        )
        ctx.progress(min(1.0, (start + EVAL_CHUNK) / max(1, n)))
    logits = torch.cat(chunks) if chunks else torch.zeros((0, num_classes))
    probs = torch.softmax(logits.float(), dim=1).numpy().astype(np.float32)
    true = subset.y
    pred = probs.argmax(axis=1).astype(np.int64) if n else np.zeros(0, np.int64)
    confidence = probs.max(axis=1) if n else np.zeros(0, np.float32)
    error = (1.0 - probs[np.arange(n), true]).astype(np.float32) if n else np.zeros(0, np.float32)
    loss = float(-np.log(np.clip(probs[np.arange(n), true], 1e-12, 1.0)).mean()) if n else 0.0
    report = plan_results(classification_report(pred, true, num_classes, class_names))
    report.update(
        loss=loss,
        checkpoint=evaluation.checkpoint_name,
        checkpoint_id=str(checkpoint.pk),
        checkpoint_epoch=meta.get("epoch"),
        split_subset=evaluation.split_subset,
    )
    directory = evaluation_dir(evaluation)
    _save_npy(directory / "indices.npy", indices.astype(np.int64))
    _save_npy(directory / "names.npy", data.item_names(dataset, indices))
    _save_npy(directory / "true.npy", true.astype(np.int64))
    _save_npy(directory / "pred.npy", pred)
    _save_npy(directory / "confidence.npy", confidence.astype(np.float32))
    _save_npy(directory / "error.npy", error)
    _save_npy(directory / "probs.npy", probs)
    _retrying(
        lambda: Evaluation.objects.filter(pk=evaluation.pk).update(num_samples=n, results=report)
    )
    ctx.record("complete", {"status": "completed", "accuracy": report["accuracy"]})
    return {"evaluation_id": evaluation.pk, "accuracy": report["accuracy"], "num_samples": n}


def plan_results(report: dict[str, Any]) -> dict[str, Any]:
    """The plan's aggregate classification metrics (plan/07-evaluation/02): accuracy, the macro
    averages, the confusion matrix and `per_class` keyed by class name; Orchard's extras
    (`classes` in order, `macro_avg`, `weighted_avg`, `num_samples`) follow."""
    per_class = report["per_class"]
    macro = report["macro_avg"]
    return {
        "accuracy": report["accuracy"],
        "f1_macro": macro["f1"],
        "precision_macro": macro["precision"],
        "recall_macro": macro["recall"],
        "confusion_matrix": report["confusion_matrix"],
        "per_class": {
            c["name"]: {k: c[k] for k in ("precision", "recall", "f1", "support")}
            for c in per_class
        },
        "classes": [c["name"] for c in per_class],
        "num_samples": report["num_samples"],
        "macro_avg": macro,
        "weighted_avg": report["weighted_avg"],
    }


def register_kinds() -> None:
    from apps.training.services import EVALUATE_KIND, TRAIN_KIND

    registry.register(TRAIN_KIND, studio_train, time_limit_s=24 * 3600, max_attempts=3)
    registry.register(EVALUATE_KIND, studio_evaluate, time_limit_s=3600, max_attempts=2)
