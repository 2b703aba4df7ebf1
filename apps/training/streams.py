"""Server-Sent Events of a run: `GET /api/training/{project_id}/runs/{run_id}/stream`.

Named events `status`, `epoch_end`, `complete` and `error`; each `data:` is JSON carrying `type`.
Events stored as TaskEvents have `id: <seq>`, so a client reconnecting with `Last-Event-ID: <seq>`
gets everything recorded after it (replayed from the database), then live events relayed from the
channel-layer group of the run's task. The stream subscribes to the group before it reads the
database, and skips live events it already replayed, so nothing falls between the two.

A fresh connection (no Last-Event-ID) starts with a `status` event (no id) giving the current
status; a `: live` comment marks the end of the replay. Progress updates are relayed as `status`
events without id. The stream ends once the run is completed, failed or stopped (after its final
event).

Without a live message the stream looks at the database every `TRAINING_SSE_POLL_S` seconds (a
setting, default 1), so a lost or late channel-layer message delays an event but never drops it
(the in-memory layer is not thread-safe: events published from worker threads of the embedded mode
may only be noticed at the next poll); it sends a comment every SSE_KEEPALIVE_S seconds to keep
proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from apps.core.conf import number_setting
from apps.core.events import group_name
from apps.training.models import TASK_STATE_TO_STATUS, TERMINAL_RUN_STATUSES

SSE_KEEPALIVE_S = 15.0
SSE_RETRY_MS = 2000
REPLAY_CHUNK = 1000
EVENT_NAMES = ("status", "epoch_end", "complete", "error")


def sse_message(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One SSE message; `data` is one line of JSON (newlines cannot occur in it)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n\n").encode()


def is_terminal(kind: str, data: dict[str, Any]) -> bool:
    """Whether a run event is its last: complete, error, or a status that ends the run."""
    if kind in ("complete", "error"):
        return True
    return kind == "status" and data.get("status") in TERMINAL_RUN_STATUSES


def _event_name(kind: str) -> str:
    return kind if kind in EVENT_NAMES else "status"


def _stored(run_id: str, seq: int, kind: str, data: dict[str, Any]) -> bytes:
    payload = {"run_id": run_id, **data, "type": _event_name(kind), "seq": seq}
    payload.pop("task_id", None)
    return sse_message(_event_name(kind), payload, seq)


def _final(run_id: str, status: str, error: str) -> bytes:
    """The terminal event of a run that ended without recording one (aborted while pending,
    worker lost too often)."""
    if status == "completed":
        return sse_message("complete", {"type": "complete", "run_id": run_id, "status": status})
    if status == "failed":
        return sse_message(
            "error", {"type": "error", "run_id": run_id, "status": status, "message": error}
        )
    return sse_message("status", {"type": "status", "run_id": run_id, "status": status})


def _read(task_id: str, after: int) -> tuple[dict[str, Any] | None, list[tuple[int, str, dict]]]:
    """The task's state and its stored events after `after` (state read first: an event stored
    before a terminal state is then always among the events). The state carries `last_seq`."""
    from django.db.models import Max

    from apps.tasks.models import Task, TaskEvent

    task = Task.objects.filter(pk=task_id).values("state", "progress", "error").first()
    if task is not None:
        task["last_seq"] = (
            TaskEvent.objects.filter(task_id=task_id).aggregate(m=Max("seq"))["m"] or 0
        )
    events: list[tuple[int, str, dict]] = []
    while True:
        chunk = list(
            TaskEvent.objects.filter(task_id=task_id, seq__gt=after)
            .order_by("seq")
            .values_list("seq", "kind", "data")[:REPLAY_CHUNK]
        )
        events += chunk
        if len(chunk) < REPLAY_CHUNK:
            return task, events
        after = chunk[-1][0]


async def run_event_stream(  # noqa: C901, PLR0915
    *, run_id: str, task_id: str | None, last_event_id: int = 0, poll_s: float | None = None
) -> AsyncIterator[bytes]:
    """The SSE byte stream of one run (see the module docstring)."""
    if poll_s is None:
        poll_s = number_setting("TRAINING_SSE_POLL_S")
    yield f"retry: {SSE_RETRY_MS}\n\n".encode()
    if task_id is None:
        yield _final(run_id, "failed", "The run's task was deleted.")
        return
    layer = get_channel_layer()
    channel = None
    group = group_name("task", task_id)
    if layer is not None:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
    read = database_sync_to_async(_read)
    try:
        task, events = await read(task_id, last_event_id)
        if task is None:
            yield _final(run_id, "failed", "The run's task was deleted.")
            return
        status = TASK_STATE_TO_STATUS.get(task["state"], "failed")
        if not last_event_id:
            yield sse_message(
                "status",
                {
                    "type": "status",
                    "run_id": run_id,
                    "status": status,
                    "progress": task["progress"],
                },
            )
        # An id from the future (a client's bug) would hide the coming events: clamp it.
        last, ended = min(last_event_id, task["last_seq"]), False
        for seq, kind, data in events:
            yield _stored(run_id, seq, kind, data)
            last, ended = seq, is_terminal(kind, data)
        if status in TERMINAL_RUN_STATUSES:
            if not ended:
                yield _final(run_id, status, task["error"])
            return

        yield b": live\n\n"  # replay done; what follows is relayed as it happens
        sent_at = time.monotonic()
        while True:
            message = None
            if channel is not None:
                try:
                    message = await asyncio.wait_for(layer.receive(channel), poll_s)
                except TimeoutError:
                    message = None
            else:
                await asyncio.sleep(poll_s)
            event = (message or {}).get("event") if message else None
            if not isinstance(event, dict):
                # Nothing live: look at the database (a channel-layer message may have been lost).
                task, events = await read(task_id, last)
                for seq, kind, data in events:
                    yield _stored(run_id, seq, kind, data)
                    last, ended = seq, is_terminal(kind, data)
                    sent_at = time.monotonic()
                status = TASK_STATE_TO_STATUS.get((task or {}).get("state"), "failed")
                if ended or status in TERMINAL_RUN_STATUSES:
                    if not ended:
                        yield _final(run_id, status, (task or {}).get("error", ""))
                    return
                if time.monotonic() - sent_at >= SSE_KEEPALIVE_S:
                    yield b": keep-alive\n\n"
                    sent_at = time.monotonic()
                continue

            kind, seq = event.get("type"), event.get("seq")
            if kind == "state":  # the job engine's state change (not stored)
                status = TASK_STATE_TO_STATUS.get(event.get("state"), "failed")
                if status in TERMINAL_RUN_STATUSES:
                    task, events = await read(task_id, last)
                    for seq, kind, data in events:
                        yield _stored(run_id, seq, kind, data)
                        last, ended = seq, is_terminal(kind, data)
                    if not ended:
                        yield _final(run_id, status, event.get("error") or "")
                    return
                if status == "pending":
                    yield sse_message(
                        "status", {"type": "status", "run_id": run_id, "status": status}
                    )
                    sent_at = time.monotonic()
                continue
            if isinstance(seq, int) and not isinstance(seq, bool):
                if seq <= last:
                    continue  # already replayed
                if seq > last + 1:  # a message was lost or overtaken: fill the gap from the DB
                    _task, missing = await read(task_id, last)
                    for mseq, mkind, mdata in missing:
                        if mseq >= seq:
                            break
                        yield _stored(run_id, mseq, mkind, mdata)
                        last = mseq
                data = {k: v for k, v in event.items() if k not in ("type", "seq", "task_id")}
                yield _stored(run_id, seq, kind, data)
                last, sent_at = seq, time.monotonic()
                if is_terminal(kind, data):
                    return
                continue
            if kind == "progress":
                info = {k: event[k] for k in ("progress", "epoch", "loss") if k in event}
                yield sse_message(
                    "status", {"type": "status", "run_id": run_id, "status": "running", **info}
                )
                sent_at = time.monotonic()
    finally:
        if channel is not None:
            await layer.group_discard(group, channel)
