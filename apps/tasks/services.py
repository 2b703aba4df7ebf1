"""The job engine: create, enqueue, run (claim -> handler -> terminal state), abort and reap tasks.

This module creates, enqueues, aborts, retries and deletes tasks and holds the engine's settings;
the runner and the sweeper (`task_run`, `task_sweep`) are in `runner.py`, the handler's
`TaskContext` in `context.py`.

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

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Max
from django.utils import timezone

from apps.core.conf import number_setting
from apps.core.events import group_name, publish
from apps.core.exceptions import Conflict, ValidationFailed
from apps.core.storage import project_local_dir
from apps.tasks import registry
from apps.tasks.models import (
    PENDING_STATES,
    TERMINAL_STATES,
    Task,
    TaskState,
    target_of,
)

if TYPE_CHECKING:
    from apps.accounts.models import Project, User

logger = logging.getLogger(__name__)


def setting(name: str) -> float:
    """A numeric engine setting (declared with its default in config/settings/base.py)."""
    return number_setting(name)


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


def resume_dir(task: Task) -> Path:
    return project_local_dir(str(task.project_id), "tasks", str(task.pk))


def _remove_resume_dir(task: Task) -> None:
    import shutil

    directory = Path(settings.MEDIA_ROOT) / "projects" / str(task.project_id) / "tasks"
    shutil.rmtree(directory / str(task.pk), ignore_errors=True)


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
