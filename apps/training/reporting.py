"""What a run's handler records: its `epoch_end`/status events (`RunReporter`), its checkpoints
(`last`, `best`) and its resume state, written with retries on transient SQLite lock errors."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from typing import Any

from apps.training.models import Run

logger = logging.getLogger(__name__)


RESUME_FILE = "resume.safetensors"


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
    from apps.clusters.training import checkpoint_store

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
