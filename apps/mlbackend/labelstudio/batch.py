"""Model inputs for a whole /predict batch, task by task: a task whose data is missing, refused,
unreadable or not fetched in time gets an error of its own, and every other task of the batch
still gets its input (one bad task never empties the batch).

Task data that must be fetched (Label Studio uploads, allowed URLs) is fetched by a bounded pool
of `LABELSTUDIO_FETCH_CONCURRENCY` lanes (on threads kept between batches) under one shared
deadline: each lane takes the next task not yet taken and keeps its connection open for the
next one (HTTP keep-alive, `apps.core.outbound.KeepAlive`: one connect, and for https one
handshake, per lane instead of per task). Each fetch gets at most what is left of the deadline
(and at most `LABELSTUDIO_FETCH_TIMEOUT_S`), a task not started before it gets "not fetched
before the deadline", and the batch answers when the deadline passes with the tasks done by
then. Inline data (`data:` URIs, texts) needs no thread.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from apps.core.conf import number_setting
from apps.core.exceptions import OrchardError
from apps.mlbackend.labelstudio.features import ModelSpec
from apps.mlbackend.labelstudio.fetch import FetchPolicy, KeepAlive, fetch_task_value
from apps.mlbackend.labelstudio.label_config import Interface

logger = logging.getLogger(__name__)

DEADLINE_MISSED = "The task data was not fetched before the batch's deadline."


def predict_deadline() -> float:
    """A monotonic deadline for a batch starting now (`LABELSTUDIO_PREDICT_DEADLINE_S`)."""
    return time.monotonic() + number_setting("LABELSTUDIO_PREDICT_DEADLINE_S")


def task_value(task: Any, interface: Interface, index: int) -> Any:
    """The task's value for the interface's data key; TaskError when it has none."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise TaskError(f"tasks[{index}] must be an object with a `data` object.")
    value = task["data"].get(interface.data_key)
    name = task.get("id", index)
    if value is None or (interface.kind in ("image", "detection") and not isinstance(value, str)):
        raise TaskError(f"task {name} has no {interface.data_key!r} in its data.")
    if interface.kind in ("text", "ner") and (
        isinstance(value, bool) or not isinstance(value, str | int | float)
    ):
        raise TaskError(f"task {name}: {interface.data_key!r} is not text.")
    return value


class TaskError(OrchardError):
    """One task of a batch cannot be predicted (the others still are)."""

    code, status, default_message = "TASK_FAILED", 400, "The task cannot be predicted."


def _needs_fetch(value: Any) -> bool:
    return isinstance(value, str) and not value.strip().startswith("data:")


def _one_image(
    value: str,
    spec: ModelSpec,
    policy: FetchPolicy,
    deadline: float,
    keep_alive: KeepAlive | None = None,
) -> np.ndarray:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TaskError(DEADLINE_MISSED)
    policy = dataclasses.replace(policy, timeout_s=min(policy.timeout_s, remaining))
    return spec.image_batch([fetch_task_value(value, policy, keep_alive)])[0]


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, OrchardError):
        return exc.message
    logger.exception("Label Studio backend: a task failed unexpectedly", exc_info=exc)
    return "Internal error while preparing the task."


def batch_inputs(
    spec: ModelSpec,
    interface: Interface,
    tasks: list[Any],
    policy: FetchPolicy,
    *,
    deadline: float,
) -> tuple[np.ndarray | None, list[int], dict[int, str]]:
    """(inputs of the tasks that worked, their indices in `tasks`, {index: error} of the others).

    Texts are featurized at once; images are decoded in place (data URIs) or fetched by the
    bounded pool (see the module docstring).
    """
    errors: dict[int, str] = {}
    values: dict[int, Any] = {}
    for index, task in enumerate(tasks):
        try:
            values[index] = task_value(task, interface, index)
        except TaskError as exc:
            errors[index] = exc.message
    rows: dict[int, np.ndarray] = {}
    if interface.kind == "text":
        order = sorted(values)
        texts = [str(v) if isinstance(v, int | float) else v for v in (values[i] for i in order)]
        if order:
            for index, row in zip(order, spec.text_batch(texts), strict=True):
                rows[index] = row
    else:
        remote = [i for i in sorted(values) if _needs_fetch(values[i])]
        for index in sorted(set(values) - set(remote)):
            try:
                rows[index] = _one_image(values[index], spec, policy, deadline)
            except Exception as exc:
                errors[index] = _error_text(exc)
        rows.update(_fetch_all(remote, values, spec, policy, deadline, errors))
    order = sorted(rows)
    inputs = np.stack([rows[i] for i in order]) if order else None
    return inputs, order, errors


# The threads the lanes of every batch run on, kept between batches (starting eight threads for
# each batch cost more than its fetches from a fast Label Studio). An idle thread is reused, a
# new one started only when none is idle, up to LANE_THREADS (past it, lanes wait their turn
# under their batch's deadline).
LANE_THREADS = 256
_lane_pool: tuple[int, ThreadPoolExecutor] | None = None
_lane_pool_lock = threading.Lock()


def _lanes() -> ThreadPoolExecutor:
    global _lane_pool
    with _lane_pool_lock:
        if _lane_pool is None or _lane_pool[0] != os.getpid():  # none yet, or forked
            pool = ThreadPoolExecutor(max_workers=LANE_THREADS, thread_name_prefix="ls-fetch")
            _lane_pool = (os.getpid(), pool)
        return _lane_pool[1]


def _fetch_all(indices, values, spec, policy, deadline, errors) -> dict[int, np.ndarray]:
    if not indices:
        return {}
    lanes = min(max(1, int(number_setting("LABELSTUDIO_FETCH_CONCURRENCY"))), len(indices))
    todo = deque(indices)
    outcomes: dict[int, np.ndarray | str] = {}  # a row, or the task's error
    lock = threading.Lock()
    answered = False  # set when the batch answers: a lane still running stops and writes nothing

    def lane() -> None:
        with KeepAlive() as keep_alive:
            while time.monotonic() < deadline:
                with lock:
                    if answered or not todo:
                        return
                    index = todo.popleft()
                try:
                    outcome = _one_image(values[index], spec, policy, deadline, keep_alive)
                except Exception as exc:
                    outcome = _error_text(exc)
                with lock:
                    if answered:
                        return
                    outcomes[index] = outcome

    futures = [_lanes().submit(lane) for _ in range(lanes)]
    try:
        # Every started fetch ends by the deadline on its own (its timeout is what is left).
        wait(futures, timeout=max(0.0, deadline - time.monotonic()) + 1.0)
    finally:
        with lock:
            answered = True
            done = dict(outcomes)
        for future in futures:
            future.cancel()  # a lane still queued behind other batches' lanes never starts
    rows: dict[int, np.ndarray] = {}
    for index in indices:
        outcome = done.get(index, DEADLINE_MISSED)
        if isinstance(outcome, str):
            errors[index] = outcome
        else:
            rows[index] = outcome
    return rows


__all__ = [
    "DEADLINE_MISSED",
    "TaskError",
    "batch_inputs",
    "predict_deadline",
    "task_value",
]
