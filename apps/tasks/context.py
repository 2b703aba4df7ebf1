"""What a task's handler runs with: its `TaskContext` (progress and heartbeat reporting, stop
checks, resume files) and the stop signals (`TaskStopped`, `TaskHung`, `worker_shutdown`).
The runner (`runner.py`) makes one per attempt; see `services.py` for the engine as a whole."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from django.db import connection
from django.db.models import Max
from django.utils import timezone

from apps.core.events import group_name, publish
from apps.tasks import registry
from apps.tasks.models import (
    Task,
    TaskEvent,
    TaskState,
)
from apps.tasks.services import _publish_state, _retrying, _send, _token, resume_dir, setting

logger = logging.getLogger(__name__)


class TaskStopped(Exception):
    """Raised by `TaskContext.check()` inside a handler when the task must stop."""


class TaskHung(Exception):
    """Raised in a handler's thread that reported no progress for too long (it was given up)."""


# Set while this worker process shuts down (SIGTERM): running tasks stop at their next step and
# are re-queued without counting the attempt.
_shutting_down = threading.Event()


def worker_shutdown(active: bool = True) -> None:
    """Tell the running tasks of this process that the worker stops (or, False, no longer)."""
    if active:
        _shutting_down.set()
    else:
        _shutting_down.clear()


class TaskContext:
    """What a handler gets: its task, progress/heartbeat reporting, stop checks, resume files.

    A heartbeat thread (`start_heartbeat`) writes heartbeat and progress every
    `TASK_HEARTBEAT_INTERVAL_S` and picks up stop requests, so the handler's hot loop never
    touches the database: `progress()` and `should_stop()` read and write memory only, and
    progress events are published at most every `TASK_EVENT_INTERVAL_S`.

    `interrupted` turns True when `should_stop()` answered True because the worker shuts down: the
    handler should then save its resume state (the task is re-queued, not ended). A handler that
    reports nothing (`progress()`, `record()`) for longer than its kind's limit is given up by the
    heartbeat thread (`hung`).
    """

    def __init__(self, task: Task, kind: registry.TaskKind) -> None:
        self.task = task
        self.kind = kind
        self.attempt = task.attempts
        self.deadline = time.monotonic() + kind.time_limit_s
        self.stop_requested = bool(task.stop_requested)
        self.time_limit_exceeded = False
        self.lost = False
        self.interrupted = False
        self.hung = False
        self.progress_stale_s = float(
            kind.progress_stale_s or setting("TASK_PROGRESS_STALE_S") or float("inf")
        )
        self._last_report = time.monotonic()
        self._runner_thread = threading.get_ident()
        self._in_handler = False
        self._handler_lock = threading.Lock()
        self.progress_value = float(task.progress)
        self.info: dict[str, Any] = {}
        self._write_interval = setting("TASK_HEARTBEAT_INTERVAL_S")
        self._event_interval = setting("TASK_EVENT_INTERVAL_S")
        self._last_event = 0.0
        self._dirty = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        # The last stored event's seq, read on the first `record()` (most tasks record none).
        self._event_seq: int | None = None

    # -- objects --------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        return dict(self.task.params or {})

    @property
    def device(self) -> str:
        """The torch device of the task's host queue ("cpu", "gpu-0" -> "gpu:0")."""
        queue = self.task.queue or "cpu"
        return "cpu" if queue == "cpu" else queue.replace("-", ":", 1)

    # -- progress, heartbeat, stop ----------------------------------------------------------
    def progress(self, fraction: float, **info: Any) -> None:
        """Report progress in 0..1 (and display info such as epoch/loss); cheap to call often."""
        self.progress_value = min(1.0, max(0.0, float(fraction)))
        self._last_report = time.monotonic()
        self.info.update(info)
        self._dirty = True
        self._maybe_publish()

    def should_stop(self) -> bool:
        """True when an abort was requested, the time limit passed, the task was lost, or the
        worker shuts down (`interrupted`)."""
        if time.monotonic() > self.deadline:
            self.time_limit_exceeded = True
        if _shutting_down.is_set():
            self.interrupted = True
        return self.stop_requested or self.time_limit_exceeded or self.lost or self.interrupted

    def check(self) -> None:
        """Raise TaskStopped when the handler should stop (for handlers without a loop hook)."""
        if self.should_stop():
            raise TaskStopped()

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"heartbeat-{self.task.pk}", daemon=True
        )
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def run_handler(self) -> dict | None:
        """Call the kind's handler (in the runner's thread)."""
        with self._handler_lock:
            self._in_handler = True
        try:
            return self.kind.handler(self)
        finally:
            with self._handler_lock:
                self._in_handler = False

    def _heartbeat_loop(self) -> None:
        from django.db import connection

        try:
            while not self._done.wait(self._write_interval):
                self.heartbeat()
                if not self.lost:
                    self._check_progress()
                if self.lost:
                    return
        finally:
            connection.close()

    def heartbeat(self) -> None:
        """Write heartbeat and progress now, and pick up a stop request.

        A database error closes this thread's connection (a dropped connection stays broken
        otherwise) and tries once more with a new one; if that fails too the beat is skipped
        and the next one tries again, rather than failing a long training run.
        """
        from django.db import InterfaceError, OperationalError

        for attempt in (1, 2):
            try:
                self._beat()
                return
            except (OperationalError, InterfaceError):
                logger.warning(
                    "task %s: heartbeat failed (try %s); reconnecting",
                    self.task.pk,
                    attempt,
                    exc_info=True,
                )
                _drop_connection()

    def _check_progress(self) -> None:
        """Give the task up when its handler reported nothing for longer than its kind allows."""
        from django.db import InterfaceError, OperationalError

        idle = time.monotonic() - self._last_report
        if idle <= self.progress_stale_s:
            return
        try:
            self._give_up_hung(idle)
        except (OperationalError, InterfaceError):
            logger.warning("task %s: could not give up a hung task", self.task.pk, exc_info=True)
            _drop_connection()

    def _give_up_hung(self, idle: float) -> None:
        now = timezone.now()
        reason = (
            f"No progress reported for {idle:.0f} s (limit {self.progress_stale_s:g} s, "
            f"TASK_PROGRESS_STALE_S) in attempt {self.attempt}"
        )
        guard = Task.objects.filter(pk=self.task.pk, state=TaskState.ACTIVE, attempts=self.attempt)
        if self.attempt < self.task.max_attempts:
            updated = guard.update(
                state=TaskState.QUEUED,
                heartbeat_at=None,
                error=f"{reason}; re-queued.",
                sent_at=now,
                updated_at=now,
            )
            if updated:
                _send(
                    task_id=str(self.task.pk),
                    queue=self.task.queue,
                    kind=self.task.kind,
                    token=_token(now),
                )
        else:
            updated = guard.update(
                state=TaskState.FAILED,
                finished_at=now,
                heartbeat_at=now,
                error=f"{reason}; failed.",
                updated_at=now,
            )
        self.hung = self.lost = True
        if not updated:
            return
        logger.error("task %s: %s", self.task.pk, reason)
        _publish_state(Task.objects.get(pk=self.task.pk))
        with self._handler_lock:
            if self._in_handler:
                from dramatiq.middleware.threading import raise_thread_exception

                raise_thread_exception(self._runner_thread, TaskHung)

    def _beat(self) -> None:
        now = timezone.now()
        updated = Task.objects.filter(
            pk=self.task.pk, state=TaskState.ACTIVE, attempts=self.attempt
        ).update(heartbeat_at=now, progress=self.progress_value, updated_at=now)
        if not updated:
            # Reaped and re-queued (or deleted): another attempt owns the row now.
            self.lost = True
            return
        self.stop_requested = bool(
            Task.objects.filter(pk=self.task.pk).values_list("stop_requested", flat=True).first()
        )

    def _maybe_publish(self) -> None:
        now = time.monotonic()
        if self._dirty and now - self._last_event >= self._event_interval:
            self._last_event = now
            self._dirty = False
            self.publish({"type": "progress", "progress": self.progress_value, **self.info})

    # -- events -----------------------------------------------------------------------------
    def publish(self, event: dict[str, Any]) -> None:
        publish(group_name("task", self.task.pk), {"task_id": str(self.task.pk), **event})

    def record(self, kind: str, data: dict[str, Any], *, key: str | None = None) -> None:
        """Store an event (epoch metrics, a stage) for replay and publish it.

        With `key` (a field of `data`, such as "epoch") an event is stored and published once per
        value of that field: a resumed attempt that redoes an epoch updates the stored event and
        publishes nothing. Only a later attempt can find one stored (an attempt does each epoch
        once), so the first attempt writes once per event.
        """
        self._last_report = time.monotonic()
        if key is not None and key in data and self.attempt > 1:
            same = TaskEvent.objects.filter(
                task_id=self.task.pk, kind=kind, **{f"data__{key}": data[key]}
            )
            if _retrying(lambda: same.update(data=data)):
                return
        if self._event_seq is None:
            last = TaskEvent.objects.filter(task_id=self.task.pk).aggregate(m=Max("seq"))["m"]
            self._event_seq = last or 0
        self._event_seq += 1
        seq = self._event_seq
        _retrying(
            lambda: TaskEvent.objects.create(task_id=self.task.pk, seq=seq, kind=kind, data=data)
        )
        self.publish({"type": kind, "seq": seq, **data})

    # -- resume files ---------------------------------------------------------------------------
    @property
    def resume_path(self) -> Path:
        return resume_dir(self.task) / "resume.safetensors"

    def save_resume(self, state: dict, metadata: dict[str, Any]) -> None:
        """Save tensors + JSON metadata to resume from after a lost worker (atomic replace)."""
        from apps.core.storage import write_state

        write_state(self.resume_path, state, metadata)

    def load_resume(self) -> tuple[dict, dict[str, Any]] | None:
        from apps.core.storage import read_state

        if not self.resume_path.exists():
            return None
        return read_state(self.resume_path)


def _drop_connection() -> None:
    """Close this thread's database connection; the next query opens a new one."""
    try:
        connection.close()
    except Exception:
        logger.debug("closing a broken database connection failed", exc_info=True)
