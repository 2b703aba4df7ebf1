"""The job engine's runner and recovery: `task_run` claims a task (in order, within its project's
fair share of the host queue), runs its handler and sets its terminal state; `task_sweep`
re-queues tasks whose worker died and re-sends queued tasks whose message was lost. See
`services.py` for the engine as a whole."""

from __future__ import annotations

import hashlib
import logging
import time
import traceback as tb
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from apps.core.exceptions import OrchardError
from apps.tasks import registry
from apps.tasks.context import TaskContext, TaskHung, TaskStopped
from apps.tasks.models import (
    PENDING_STATES,
    Task,
    TaskState,
)
from apps.tasks.services import (
    _publish_state,
    _remove_resume_dir,
    _retrying,
    _send,
    _send_on_commit,
    _token,
    _token_time,
    setting,
)

logger = logging.getLogger(__name__)


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
    row = Task.objects.filter(pk=task_id).values_list("queue", "state").first()
    if row is None:
        logger.warning("task %s does not exist (deleted?); message dropped", task_id)
        return None
    queue, state = row
    if state != TaskState.QUEUED:
        # Most often the duplicate that `_wake_next_of_target` sends when a task's first message
        # is still in the queue: ignored with this one read, without taking the queue's lock (a
        # task that leaves queued comes back only with a message of its own).
        logger.info("task %s is %s; message ignored", task_id, state)
        return None
    resend: tuple[Task, str] | None = None
    with transaction.atomic():
        _lock_queue(queue)
        # The row and whether an earlier task of its target is pending, in one read.
        task = Task.objects.filter(pk=task_id).annotate(blocked=_blocked_by_order()).first()
        if task is None or task.state != TaskState.QUEUED:
            logger.info("task %s is %s; message ignored", task_id, task and task.state)
            return None
        waits = task.blocked or _over_fair_share(task)  # no target: never blocked
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
        else:
            claimed = {
                "state": TaskState.ACTIVE,
                "attempts": task.attempts + 1,
                "heartbeat_at": now,
                "started_at": task.started_at or now,
                "updated_at": now,
            }
            if not Task.objects.filter(
                pk=task_id, state=TaskState.QUEUED, attempts=task.attempts
            ).update(**claimed):
                return None
            _as_written(task, claimed)
    if resend is not None:
        task, new_token = resend
        delay = int(setting("TASK_ORDER_RETRY_MS"))
        _send(task_id=task_id, queue=task.queue, kind=task.kind, token=new_token, delay_ms=delay)
        return None
    return task


def _as_written(task: Task, fields: dict[str, Any]) -> None:
    """Set on `task` what an update just wrote to its row, instead of reading it back; the
    state as a plain str, as read from the row."""
    for name, value in fields.items():
        setattr(task, name, value)
    task.state = str(task.state)


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
    deleted: bool | None = None  # whether the row went while it ran: looked up once, if needed
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
        deleted = _deleted(task)
        if not deleted:  # else its rows went from under it (a foreign key): see below
            logger.exception("task %s failed", task_id)
    finally:
        ctx.stop_heartbeat()
    if deleted is None and (ctx.lost or state == TaskState.FAILED):
        deleted = _deleted(task)
    if deleted:
        # Deleted while it ran (with its cluster, its project, ...): nothing is left to record
        # the outcome in; its resume files go with it.
        logger.info("task %s was deleted while it ran; result dropped", task_id)
        _remove_resume_dir(task)
        return
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


def _deleted(task: Task) -> bool:
    """Whether the task's row is gone (False when the database cannot tell)."""
    try:
        return not _retrying(lambda: Task.objects.filter(pk=task.pk).exists())
    except DatabaseError:
        return False


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
        if state == TaskState.FINISHED:
            # What the state event and the next steps read is what the update wrote (the
            # heartbeat's progress is 1.0 now); no need to read the row back.
            _as_written(task, fields)
        else:
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
