"""Kinds of task and their handlers. Apps register theirs in `AppConfig.ready()`:

    from apps.tasks.registry import register
    register("evaluate", evaluate_handler, time_limit_s=3600, max_attempts=2)

A handler is `handler(ctx: TaskContext) -> dict | None`; the dict becomes `Task.result`. It must
call `ctx.should_stop()` (or `ctx.check()`) between steps, and report with `ctx.progress()`.
`validate(params=...)` raises ValidationFailed before the row exists. What a kind needs besides its
params (a cluster, a dataset) is checked by the app that submits it (for the tasks of a cluster:
`apps.clusters.services.cluster_task_create` and `register_cluster_kind`).
A handler that reports nothing (`ctx.progress()` / `ctx.record()`) for longer than its kind's
`progress_stale_s` (None: the TASK_PROGRESS_STALE_S setting, 600 s) counts as hung: it is
re-queued while it has attempts left, else failed with that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_TIME_LIMIT_S = 6 * 3600
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class TaskKind:
    name: str
    handler: Callable[[Any], dict | None]
    time_limit_s: int = DEFAULT_TIME_LIMIT_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    # validate(params=...) raises ValidationFailed before the row exists.
    validate: Callable[..., None] | None = None
    # Seconds without a progress report before the task counts as hung (None: the setting).
    progress_stale_s: float | None = None


_kinds: dict[str, TaskKind] = {}


def register(
    kind: str,
    handler: Callable[[Any], dict | None],
    *,
    time_limit_s: int = DEFAULT_TIME_LIMIT_S,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    validate: Callable[..., None] | None = None,
    progress_stale_s: float | None = None,
) -> TaskKind:
    """Register (or replace) the handler of a task kind."""
    if time_limit_s <= 0 or max_attempts <= 0:
        raise ValueError("time_limit_s and max_attempts must be positive")
    if progress_stale_s is not None and progress_stale_s <= 0:
        raise ValueError("progress_stale_s must be positive")
    entry = TaskKind(
        kind,
        handler,
        time_limit_s,
        max_attempts,
        validate,
        progress_stale_s,
    )
    _kinds[kind] = entry
    return entry


def get(kind: str) -> TaskKind:
    """The registered kind, or KeyError."""
    return _kinds[kind]


def kinds() -> list[str]:
    return sorted(_kinds)
