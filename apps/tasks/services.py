"""The job engine: create, enqueue, run (claim -> handler -> terminal state), abort and reap tasks.

`task_run` plays NetBox's JobRunner role for every Task: it claims the row atomically
(queued -> active, attempts + 1, heartbeat), runs the kind's handler with a `TaskContext`, and sets
the terminal state (finished / aborted / failed with the error and traceback). A message for a
task that is not queued any more (finished, aborted, failed, or claimed by another worker) does
nothing, so redelivery is harmless. Dramatiq retries nothing: a worker that died is found by
`task_requeue_stale` (stale heartbeat), which re-queues the task to resume from its checkpoint.

Claims are decided in one transaction per host queue (PostgreSQL: an advisory lock on the queue's
name; SQLite: the write lock of BEGIN IMMEDIATE), so several worker processes agree on:
- order: a task of a target (a cluster, ...) waits until the earlier tasks of its target ended;
- fair share: on one host queue, a project that already has TASK_PROJECT_MAX_ACTIVE active tasks
  does not start another while a different project, below that share there, has a task waiting
  that could start; alone on the queue a project may use every worker slot.
A task that must wait stays queued and its message is re-sent after TASK_ORDER_RETRY_MS (only the
task's current message: `Task.sent_at` is its token, refreshed every half TASK_QUEUED_RESEND_S
while it waits), so the freed slot takes the next message.

No work is lost: `task_sweep` (every `orchard_worker` and the embedded worker run it every
TASK_SWEEP_INTERVAL_S) re-queues tasks whose worker died and re-sends queued tasks whose message
is older than TASK_QUEUED_RESEND_S (lost with a broker restart, or never sent because the broker
was unreachable at submit time: a failed send only logs a warning). A worker told to stop
(SIGTERM) stops its task at the next step, keeps its checkpoint and re-queues it at once without
counting the attempt; a handler that reports no progress for TASK_PROGRESS_STALE_S (or its kind's
`progress_stale_s`) is treated as hung even while its heartbeat thread beats.

Settings (read with `setting()`: Django setting, else environment variable, else default):
`TASK_HEARTBEAT_STALE_S` (60), `TASK_HEARTBEAT_INTERVAL_S` (1.0: the minimum time between
progress/heartbeat writes), `TASK_EVENT_INTERVAL_S` (0.25: between published progress events),
`TASK_ORDER_RETRY_MS` (500: delay before a task waiting for an earlier task of its target is
looked at again), `TASK_TIME_LIMIT_GRACE_S` (30: the Dramatiq time limit is the kind's limit plus
this grace, so the handler's own limit normally fires first), `TASK_PROJECT_MAX_ACTIVE` (1: the
fair share; 0 turns it off), `TASK_QUEUED_RESEND_S` (60), `TASK_SWEEP_INTERVAL_S` (15),
`TASK_PROGRESS_STALE_S` (600).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import traceback as tb
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Count, Exists, F, Max, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.core.conf import number_setting
from apps.core.events import group_name, publish
from apps.core.exceptions import Conflict, OrchardError, ValidationFailed
from apps.core.storage import project_local_dir
from apps.tasks import registry
from apps.tasks.models import (
    PENDING_STATES,
    TERMINAL_STATES,
    Task,
    TaskEvent,
    TaskState,
    target_of,
)

if TYPE_CHECKING:
    from apps.accounts.models import Project, User

logger = logging.getLogger(__name__)

_DEFAULTS: dict[str, float] = {
    "TASK_HEARTBEAT_STALE_S": 60,
    "TASK_HEARTBEAT_INTERVAL_S": 1.0,
    "TASK_EVENT_INTERVAL_S": 0.25,
    "TASK_ORDER_RETRY_MS": 500,
    "TASK_TIME_LIMIT_GRACE_S": 30,
    "TASK_CHECKPOINT_INTERVAL_S": 30,
    "TASK_PROJECT_MAX_ACTIVE": 1,
    "TASK_QUEUED_RESEND_S": 60,
    "TASK_SWEEP_INTERVAL_S": 15,
    "TASK_PROGRESS_STALE_S": 600,
}


def setting(name: str) -> float:
    """A numeric engine setting: Django settings, else the environment, else the default."""
    return number_setting(name, _DEFAULTS[name])


def _retrying(fn, *, attempts: int = 5, delay_s: float = 0.2):
    """Run a short DB operation, retrying transient lock errors (SQLite under concurrency)."""
    from django.db import OperationalError

    for attempt in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(delay_s * (attempt + 1))
    return None


# --- creating and enqueueing ---------------------------------------------------------------------


@transaction.atomic
def task_create(
    *,
    project: Project,
    actor: User | None,
    kind: str,
    name: str,
    target: models.Model | None = None,
    params: dict[str, Any] | None = None,
    queue: str | None = None,
    visibility: str | None = None,
) -> Task:
    """Create a queued task on host queue `queue` (default "cpu") and send it there once the
    transaction commits.

    A task with a `target` (a model row: the cluster it trains, ...) runs after the earlier tasks
    of that target. The caller serialises the creations of one target (the clusters app locks
    the cluster's row) and checks the queue: the engine knows no hosts.
    """
    try:
        entry = registry.get(kind)
    except KeyError:
        raise ValidationFailed.for_field(
            "kind", f"Unknown task kind {kind!r} (known: {', '.join(registry.kinds())})."
        ) from None
    params = dict(params or {})
    if entry.validate is not None:
        entry.validate(params=params)
    fields: dict[str, Any] = {"visibility": visibility} if visibility else {}
    sequence = 0
    if target is not None:
        fields.update(target_of(target))
        last = Task.objects.filter(**target_of(target)).aggregate(m=Max("sequence"))["m"] or 0
        sequence = last + 1
    now = timezone.now()
    task = Task.objects.create(
        project=project,
        owner=actor,
        name=name,
        kind=kind,
        queue=queue or "cpu",
        params=params,
        max_attempts=entry.max_attempts,
        sequence=sequence,
        queued_at=now,
        sent_at=now,
        **fields,
    )
    _send_on_commit(task, token=_token(now))
    return task


def _token(sent_at: datetime | None) -> str | None:
    """The token of the message sent at `sent_at` (the row's `sent_at`)."""
    return sent_at.isoformat() if sent_at else None


def _token_time(token: str | None) -> datetime | None:
    return datetime.fromisoformat(token) if token else None


def task_enqueue(
    *, task_id: str, queue: str, kind: str, delay_ms: int | None = None, token: str | None = None
) -> None:
    """Send the runner actor for `task_id` to `queue` (one queue per host); raises when the broker
    fails (`_send` is the forgiving variant the engine uses)."""
    from apps.tasks.actors import run_task

    broker = run_task.broker
    broker.declare_queue(queue)
    try:
        limit_s = registry.get(kind).time_limit_s
    except KeyError:
        limit_s = registry.DEFAULT_TIME_LIMIT_S
    time_limit_ms = int((limit_s + setting("TASK_TIME_LIMIT_GRACE_S")) * 1000)
    message = run_task.message_with_options(args=(task_id, token), time_limit=time_limit_ms)
    broker.enqueue(message.copy(queue_name=queue), delay=delay_ms)


def _send(
    *, task_id: str, queue: str, kind: str, token: str | None, delay_ms: int | None = None
) -> bool:
    """`task_enqueue`, but a broker failure only logs a warning: the row stays queued with no
    message known to be in flight (`sent_at` NULL), and the sweeper's next run sends it."""
    try:
        task_enqueue(task_id=task_id, queue=queue, kind=kind, delay_ms=delay_ms, token=token)
        return True
    except Exception:
        logger.warning(
            "task %s: could not send its message to queue %r; the sweeper will send it again",
            task_id,
            queue,
            exc_info=True,
        )
    try:
        Task.objects.filter(pk=task_id, state=TaskState.QUEUED, sent_at=_token_time(token)).update(
            sent_at=None
        )
    except Exception:
        logger.warning("task %s: could not mark its message unsent", task_id, exc_info=True)
    return False


def _send_on_commit(task: Task, *, token: str | None) -> None:
    task_id, queue, kind = str(task.pk), task.queue, task.kind
    transaction.on_commit(lambda: _send(task_id=task_id, queue=queue, kind=kind, token=token))


# --- aborting ------------------------------------------------------------------------------------


def task_abort(*, task: Task) -> Task:
    """Abort a task: a queued one at once; an active one stops between steps (stop_requested).

    Aborting a task that already ended changes nothing.
    """
    now = timezone.now()
    if Task.objects.filter(pk=task.pk, state=TaskState.QUEUED).update(
        state=TaskState.ABORTED, finished_at=now, stop_requested=True, updated_at=now
    ):
        task.refresh_from_db()
        _publish_state(task)
        _remove_resume_dir(task)
        return task
    Task.objects.filter(pk=task.pk, state=TaskState.ACTIVE).update(
        stop_requested=True, updated_at=now
    )
    task.refresh_from_db()
    return task


def task_retry(*, task: Task) -> Task:
    """Queue an aborted or failed task again (attempts reset); its handler resumes from whatever
    it saved. Conflict when the task is not aborted or failed (any more)."""
    now = timezone.now()
    updated = Task.objects.filter(
        pk=task.pk, state__in=[TaskState.ABORTED, TaskState.FAILED]
    ).update(
        state=TaskState.QUEUED,
        stop_requested=False,
        error="",
        traceback="",
        attempts=0,
        progress=0.0,
        heartbeat_at=None,
        started_at=None,
        finished_at=None,
        queued_at=now,
        sent_at=now,
        updated_at=now,
    )
    if not updated:
        raise Conflict("The task changed meanwhile (it is not aborted or failed); try again.")
    task.refresh_from_db()
    _send_on_commit(task, token=_token(now))
    _publish_state(task)
    return task


def task_delete(*, task: Task) -> Task | None:
    """Delete an ended task (what other apps keep of it, such as a request result, stays); a
    pending one is aborted instead.

    Returns the aborted task, or None when the row was deleted.
    """
    if task.state in PENDING_STATES:
        task = task_abort(task=task)
        if task.state in PENDING_STATES:
            return task
    _remove_resume_dir(task)
    Task.objects.filter(pk=task.pk, state__in=TERMINAL_STATES).delete()
    return None


# --- the runner ----------------------------------------------------------------------------------


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
        self._event_seq = TaskEvent.objects.filter(task=task).aggregate(m=Max("seq"))["m"] or 0

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
        publishes nothing.
        """
        self._last_report = time.monotonic()
        if key is not None and key in data:
            same = TaskEvent.objects.filter(
                task_id=self.task.pk, kind=kind, **{f"data__{key}": data[key]}
            )
            if _retrying(lambda: same.update(data=data)):
                return
        self._event_seq += 1
        seq = self._event_seq
        _retrying(
            lambda: TaskEvent.objects.create(task_id=self.task.pk, seq=seq, kind=kind, data=data)
        )
        self.publish({"type": kind, "seq": self._event_seq, **data})

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


def resume_dir(task: Task) -> Path:
    return project_local_dir(str(task.project_id), "tasks", str(task.pk))


def _remove_resume_dir(task: Task) -> None:
    import shutil

    directory = Path(settings.MEDIA_ROOT) / "projects" / str(task.project_id) / "tasks"
    shutil.rmtree(directory / str(task.pk), ignore_errors=True)


def _lock_queue(queue: str) -> None:
    """Serialise the claims of one host queue until the transaction ends. PostgreSQL: an advisory
    lock on the queue's name; SQLite: the transaction already holds the database's write lock
    (BEGIN IMMEDIATE, see the settings)."""
    if connection.vendor != "postgresql":
        return
    digest = hashlib.blake2b(f"orchard.tasks.queue:{queue}".encode(), digest_size=8).digest()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest, "big", signed=True)]
        )


def _blocked_by_order() -> Exists:
    """For a task row (OuterRef): an earlier task of its target is still pending."""
    return Exists(
        Task.objects.filter(
            target_type=OuterRef("target_type"),
            target_id=OuterRef("target_id"),
            sequence__lt=OuterRef("sequence"),
            state__in=PENDING_STATES,
        )
    )


def _over_fair_share(task: Task) -> bool:
    """Whether `task`'s project holds its share of the host queue while another project, below
    its share there, has a task waiting that could start (see the module docstring)."""
    share = int(setting("TASK_PROJECT_MAX_ACTIVE"))
    if share <= 0:
        return False
    on_queue = Task.objects.filter(queue=task.queue).order_by()
    active = dict(
        on_queue.filter(state=TaskState.ACTIVE)
        .values_list("project_id")
        .annotate(n=Count("pk"))
        .values_list("project_id", "n")
    )
    if active.get(task.project_id, 0) < share:
        return False
    at_share = [project for project, n in active.items() if n >= share]
    waiting = on_queue.filter(state=TaskState.QUEUED).exclude(project_id__in=at_share)
    return waiting.filter(~_blocked_by_order()).exists()


def _claim(task_id: str, token: str | None = None) -> Task | None:
    """queued -> active for this worker, or None (not queued, or must wait: then its message is
    sent again after TASK_ORDER_RETRY_MS, when it is the task's current message)."""
    queue = Task.objects.filter(pk=task_id).values_list("queue", flat=True).first()
    if queue is None:
        logger.warning("task %s does not exist (deleted?); message dropped", task_id)
        return None
    resend: tuple[Task, str] | None = None
    with transaction.atomic():
        _lock_queue(queue)
        task = Task.objects.filter(pk=task_id).first()
        if task is None or task.state != TaskState.QUEUED:
            logger.info("task %s is %s; message ignored", task_id, task and task.state)
            return None
        waits = (
            task.target_id is not None
            and Task.objects.filter(pk=task.pk).filter(_blocked_by_order()).exists()
        ) or _over_fair_share(task)
        now = timezone.now()
        if waits:
            if token is not None and _token_time(token) != task.sent_at:
                logger.info("task %s: superseded message dropped", task_id)
                return None
            # The message goes round again. Mark it seen now and then (not on every round: one
            # write per half resend period), so that the sweeper leaves a waiting task alone.
            fresh = now - timedelta(seconds=setting("TASK_QUEUED_RESEND_S") / 2)
            sent_at = task.sent_at
            if sent_at is None or sent_at < fresh:
                if not Task.objects.filter(
                    pk=task.pk, state=TaskState.QUEUED, sent_at=sent_at
                ).update(sent_at=now):
                    return None
                sent_at = now
            resend = (task, _token(sent_at))
        elif not Task.objects.filter(pk=task_id, state=TaskState.QUEUED).update(
            state=TaskState.ACTIVE,
            attempts=F("attempts") + 1,
            heartbeat_at=now,
            started_at=Coalesce("started_at", now),
            updated_at=now,
        ):
            return None
    if resend is not None:
        task, new_token = resend
        delay = int(setting("TASK_ORDER_RETRY_MS"))
        _send(task_id=task_id, queue=task.queue, kind=task.kind, token=new_token, delay_ms=delay)
        return None
    return Task.objects.get(pk=task_id)


def task_run(task_id: str, token: str | None = None) -> None:
    """Run one task to a terminal state (the body of the `run_task` actor), or back to queued when
    the worker shuts down meanwhile."""
    from dramatiq.middleware.time_limit import TimeLimitExceeded

    _maybe_reap()
    task = _retrying(lambda: _claim(task_id, token))
    if task is None:
        return
    _publish_state(task)
    try:
        kind = registry.get(task.kind)
    except KeyError:
        _finish(task, task.attempts, TaskState.FAILED, error=f"Unknown task kind {task.kind!r}.")
        return
    ctx = TaskContext(task, kind)
    state, result, error, trace = TaskState.FINISHED, None, "", ""
    ctx.start_heartbeat()
    try:
        result = ctx.run_handler()
    except (TaskStopped, TaskHung):
        pass
    except TimeLimitExceeded:
        ctx.time_limit_exceeded = True
    except OrchardError as exc:
        state, error = TaskState.FAILED, exc.message
        trace = tb.format_exc()
    except Exception as exc:
        state, error, trace = TaskState.FAILED, f"{type(exc).__name__}: {exc}", tb.format_exc()
        logger.exception("task %s failed", task_id)
    finally:
        ctx.stop_heartbeat()
    if ctx.lost:
        logger.warning("task %s was taken over by another attempt; result dropped", task_id)
        return
    if state == TaskState.FINISHED:
        if ctx.time_limit_exceeded:
            state = TaskState.FAILED
            error = f"Time limit of {kind.time_limit_s} s exceeded."
        elif ctx.stop_requested:
            state = TaskState.ABORTED
        elif ctx.interrupted:
            _requeue_interrupted(task, ctx.attempt)
            return
    _finish(task, ctx.attempt, state, result=result, error=error, traceback=trace)


def _requeue_interrupted(task: Task, attempt: int) -> None:
    """The worker shuts down: queue the task again at once, without counting the attempt (its
    handler kept its resume state)."""
    now = timezone.now()
    updated = _retrying(
        lambda: Task.objects.filter(pk=task.pk, state=TaskState.ACTIVE, attempts=attempt).update(
            state=TaskState.QUEUED,
            attempts=max(0, attempt - 1),
            heartbeat_at=None,
            error="",
            sent_at=now,
            updated_at=now,
        )
    )
    if not updated:
        return
    logger.warning("task %s: worker shutting down; re-queued", task.pk)
    _send(task_id=str(task.pk), queue=task.queue, kind=task.kind, token=_token(now))
    task.refresh_from_db()
    _publish_state(task)


_last_reap = 0.0


def _maybe_reap() -> None:
    """Run the stale-task reaper from the runner too, at most every half stale period per
    process, so that the embedded mode (no `orchard_worker` loop) also recovers lost tasks."""
    global _last_reap
    now = time.monotonic()
    stale = setting("TASK_HEARTBEAT_STALE_S")
    if now - _last_reap < stale / 2:
        return
    _last_reap = now
    try:
        task_requeue_stale(older_than_s=stale)
    except Exception:
        logger.warning("stale-task reaper failed", exc_info=True)


def _finish(
    task: Task,
    attempt: int,
    state: str,
    *,
    result: dict | None = None,
    error: str = "",
    traceback: str = "",
) -> None:
    now = timezone.now()
    fields: dict[str, Any] = {
        "state": state,
        "finished_at": now,
        "heartbeat_at": now,
        "error": error[:10000],
        "traceback": traceback[-20000:],
        "updated_at": now,
    }
    if result is not None:
        fields["result"] = result
    if state == TaskState.FINISHED:
        fields["progress"] = 1.0
    updated = _retrying(
        lambda: Task.objects.filter(pk=task.pk, state=TaskState.ACTIVE, attempts=attempt).update(
            **fields
        )
    )
    if updated:
        task.refresh_from_db()
        _remove_resume_dir(task)
        _publish_state(task)
        _wake_next_of_target(task)


def _wake_next_of_target(task: Task) -> None:
    """The next queued task of the finished task's target may start now: send it at once rather
    than let it wait for its TASK_ORDER_RETRY_MS round (that held a cluster to 2-3 tasks/s). Its
    message in flight is superseded (a new token) and dropped when it arrives."""
    if task.target_id is None:
        return
    try:
        following = (
            Task.objects.filter(
                target_type=task.target_type, target_id=task.target_id, state=TaskState.QUEUED
            )
            .order_by("sequence")
            .first()
        )
        if following is None:
            return
        now = timezone.now()
        if Task.objects.filter(
            pk=following.pk, state=TaskState.QUEUED, sent_at=following.sent_at
        ).update(sent_at=now):
            _send(
                task_id=str(following.pk),
                queue=following.queue,
                kind=following.kind,
                token=_token(now),
            )
    except Exception:  # the order round and the sweeper still send it
        logger.warning(
            "task %s: could not wake the next task of its target", task.pk, exc_info=True
        )


def _publish_state(task: Task) -> None:
    publish(group_name("task", task.pk), task_state_event(task))


def task_state_event(task: Task) -> dict[str, Any]:
    """The state of a task as an event (the first message of the events socket)."""

    def ts(value):
        return value.isoformat() if value else None

    return {
        "type": "state",
        "task_id": str(task.pk),
        "state": task.state,
        "progress": task.progress,
        "attempts": task.attempts,
        "error": task.error,
        "queued_at": ts(task.queued_at),
        "started_at": ts(task.started_at),
        "finished_at": ts(task.finished_at),
    }


# --- the stale-heartbeat reaper ------------------------------------------------------------------


def task_requeue_stale(*, older_than_s: float | None = None) -> list[str]:
    """Re-queue active tasks whose heartbeat is older than `older_than_s` (their worker died).

    A task with attempts left goes back to queued and is re-sent (it resumes from its last
    checkpoint); one without fails with "worker lost N times". Returns the ids re-queued.
    """
    if older_than_s is None:
        older_than_s = setting("TASK_HEARTBEAT_STALE_S")
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_s)
    stale = Task.objects.filter(state=TaskState.ACTIVE).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
    )
    requeued = []
    for task in stale:
        guard = Task.objects.filter(pk=task.pk, state=TaskState.ACTIVE, attempts=task.attempts)
        guard = guard.filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True))
        if task.attempts < task.max_attempts:
            if guard.update(
                state=TaskState.QUEUED,
                heartbeat_at=None,
                error=f"Worker lost during attempt {task.attempts}; re-queued.",
                sent_at=now,
                updated_at=now,
            ):
                requeued.append(str(task.pk))
                _send_on_commit(task, token=_token(now))
                logger.warning("task %s: worker lost, re-queued", task.pk)
        elif guard.update(
            state=TaskState.FAILED,
            finished_at=now,
            error=f"Worker lost {task.attempts} times.",
            updated_at=now,
        ):
            logger.error("task %s: worker lost %s times, failed", task.pk, task.attempts)
            task.refresh_from_db()
            _publish_state(task)
    return requeued


def task_resend_queued(*, older_than_s: float | None = None) -> list[str]:
    """Send a new message for every queued task whose last one was sent more than `older_than_s`
    (TASK_QUEUED_RESEND_S) ago, or never: lost with a broker restart (the embedded mode's broker
    lives in memory) or not sent because the broker was unreachable. A task that waits for its turn
    re-sends its own message whenever a worker looks at it, so only tasks that no worker has seen
    for that long are re-sent. Returns the ids re-sent."""
    if older_than_s is None:
        older_than_s = setting("TASK_QUEUED_RESEND_S")
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    due = (
        Task.objects.filter(state=TaskState.QUEUED)
        .filter(Q(sent_at__lte=cutoff) | Q(sent_at__isnull=True))
        .order_by("queued_at", "sequence")
        .values_list("pk", "queue", "kind", "sent_at")
    )
    resent = []
    for pk, queue, kind, sent_at in list(due):
        now = timezone.now()
        # Another sweeper (or a worker) may have sent it meanwhile.
        if Task.objects.filter(pk=pk, state=TaskState.QUEUED, sent_at=sent_at).update(
            sent_at=now
        ) and _send(task_id=str(pk), queue=queue, kind=kind, token=_token(now)):
            resent.append(str(pk))
    if resent:
        logger.warning("re-sent %d queued task(s) whose message was lost: %s", len(resent), resent)
    return resent


def task_sweep(
    *, stale_after_s: float | None = None, resend_after_s: float | None = None
) -> dict[str, list[str]]:
    """One sweeper pass (every `orchard_worker` and the embedded worker run it every
    TASK_SWEEP_INTERVAL_S): re-queue tasks whose worker died, re-send queued tasks whose message
    was lost. `task_sweep(resend_after_s=0)` at the start of a worker whose broker forgot its
    messages re-sends every queued task."""
    return {
        "requeued": task_requeue_stale(older_than_s=stale_after_s),
        "resent": task_resend_queued(older_than_s=resend_after_s),
    }
