"""Server-Sent Events of a run: `GET /api/training/{project_id}/runs/{run_id}/stream`.

Named events `status`, `epoch_end`, `complete` and `error`; each `data:` is JSON carrying `type`.
Events stored as TaskEvents have `id: <seq>`, so a client reconnecting with `Last-Event-ID: <seq>`
gets everything recorded after it (replayed from the database), then live events relayed from the
channel-layer group of the run's task. The stream subscribes to the group before it reads the
database, and skips live events it already replayed, so nothing falls between the two.

A fresh connection (no Last-Event-ID) starts with a `status` event (no id) giving the current
status; a `: live` comment marks the end of the replay. Progress updates are relayed as `status`
events without id. The stream ends once the run is completed, failed or stopped: after its final
event and once its task has ended too (the handler records the final event just before the job
engine writes the task's end), so a client that reads the run when the stream closes finds the
status the final event gave. Between the two the database is looked at every ENDING_POLL_S.

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
from contextlib import asynccontextmanager
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from apps.core.conf import number_setting
from apps.core.events import group_name
from apps.training.models import TASK_STATE_TO_STATUS, TERMINAL_RUN_STATUSES

SSE_KEEPALIVE_S = 15.0
# How often a stream that sent the run's final event looks for the task's end (which follows
# within milliseconds unless the worker was lost, when the sweeper ends it).
ENDING_POLL_S = 0.1
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


TASK_DELETED = "The run's task was deleted."


def _poll_interval() -> float:
    """`TRAINING_SSE_POLL_S` (declared with its default in config/settings/base.py)."""
    return number_setting("TRAINING_SSE_POLL_S")


@asynccontextmanager
async def _subscription(task_id: str) -> AsyncIterator[tuple[Any, str | None]]:
    """The channel layer and a channel in the task's group for the stream's life (both None
    without a layer). Subscribed before the replay reads the database, so no event falls between
    the replay and the live relay."""
    layer = get_channel_layer()
    if layer is None:
        yield None, None
        return
    group = group_name("task", task_id)
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    try:
        yield layer, channel
    finally:
        await layer.group_discard(group, channel)


async def _receive(layer: Any, channel: str | None, poll_s: float) -> dict[str, Any] | None:
    """The next live event of the group, or None after `poll_s` seconds without one (always None
    without a channel layer: the stream then only polls)."""
    if channel is None:
        await asyncio.sleep(poll_s)
        return None
    try:
        message = await asyncio.wait_for(layer.receive(channel), poll_s)
    except TimeoutError:
        return None
    event = (message or {}).get("event") if message else None
    return event if isinstance(event, dict) else None


class _RunStream:
    """What one stream has sent: the last stored event (`last`), whether that was the run's
    terminal event (`ended`), whether the stream is over (`done`) and when it last sent something
    (`sent_at`, for the keep-alive). Each step returns the messages to send, in order."""

    def __init__(self, run_id: str, task_id: str) -> None:
        self.run_id, self.task_id = run_id, task_id
        self.read = database_sync_to_async(_read)
        self.last, self.ended, self.done = 0, False, False
        self.sent_at = time.monotonic()

    def _send_stored(self, events: list[tuple[int, str, dict]]) -> list[bytes]:
        out = []
        for seq, kind, data in events:
            out.append(_stored(self.run_id, seq, kind, data))
            self.last, self.ended = seq, is_terminal(kind, data)
        return out

    def _finish(self, status: str, error: str) -> list[bytes]:
        """End the stream, with the run's terminal event unless one was sent already."""
        self.done = True
        return [] if self.ended else [_final(self.run_id, status, error)]

    async def replay(self, last_event_id: int) -> list[bytes]:
        """The current status (on a fresh connection) and the stored events after
        `last_event_id`; the stream is done here if the run already ended."""
        task, events = await self.read(self.task_id, last_event_id)
        if task is None:
            self.done = True
            return [_final(self.run_id, "failed", TASK_DELETED)]
        status = TASK_STATE_TO_STATUS.get(task["state"], "failed")
        out = []
        if not last_event_id:
            out.append(
                sse_message(
                    "status",
                    {
                        "type": "status",
                        "run_id": self.run_id,
                        "status": status,
                        "progress": task["progress"],
                    },
                )
            )
        # An id from the future (a client's bug) would hide the coming events: clamp it.
        self.last = min(last_event_id, task["last_seq"])
        out += self._send_stored(events)
        if status in TERMINAL_RUN_STATUSES:
            out += self._finish(status, task["error"])
        return out

    async def poll(self) -> list[bytes]:
        """Nothing live: look at the database (a channel-layer message may have been lost), and
        keep an idle stream alive."""
        task, events = await self.read(self.task_id, self.last)
        out = self._send_stored(events)
        if out:
            self.sent_at = time.monotonic()
        status = TASK_STATE_TO_STATUS.get((task or {}).get("state"), "failed")
        if status in TERMINAL_RUN_STATUSES:
            return out + self._finish(status, (task or {}).get("error", ""))
        if time.monotonic() - self.sent_at >= SSE_KEEPALIVE_S:
            out.append(b": keep-alive\n\n")
            self.sent_at = time.monotonic()
        return out

    async def on_event(self, event: dict[str, Any]) -> list[bytes]:
        """Relay one live event of the task's group."""
        kind, seq = event.get("type"), event.get("seq")
        if kind == "state":  # the job engine's state change (not stored)
            return await self._on_state(event)
        if isinstance(seq, int) and not isinstance(seq, bool):
            return await self._on_stored(event, kind, seq)
        if kind == "progress":
            info = {k: event[k] for k in ("progress", "epoch", "loss") if k in event}
            self.sent_at = time.monotonic()
            return [
                sse_message(
                    "status",
                    {"type": "status", "run_id": self.run_id, "status": "running", **info},
                )
            ]
        return []

    async def _on_state(self, event: dict[str, Any]) -> list[bytes]:
        """A terminal state ends the stream after the events stored before it; `pending` (a
        requeued run) is relayed as a status."""
        status = TASK_STATE_TO_STATUS.get(event.get("state"), "failed")
        if status in TERMINAL_RUN_STATUSES:
            _task, events = await self.read(self.task_id, self.last)
            return self._send_stored(events) + self._finish(status, event.get("error") or "")
        if status == "pending":
            self.sent_at = time.monotonic()
            return [
                sse_message("status", {"type": "status", "run_id": self.run_id, "status": status})
            ]
        return []

    async def _on_stored(self, event: dict[str, Any], kind: Any, seq: int) -> list[bytes]:
        """A stored event: skipped if already replayed, after the events a lost or overtaken
        message left out (filled from the database)."""
        if seq <= self.last:
            return []
        out = []
        if seq > self.last + 1:
            _task, missing = await self.read(self.task_id, self.last)
            for mseq, mkind, mdata in missing:
                if mseq >= seq:
                    break
                out.append(_stored(self.run_id, mseq, mkind, mdata))
                self.last = mseq
        data = {k: v for k, v in event.items() if k not in ("type", "seq", "task_id")}
        out.append(_stored(self.run_id, seq, kind, data))
        self.last, self.sent_at = seq, time.monotonic()
        self.ended = is_terminal(kind, data)
        return out


async def run_event_stream(
    *, run_id: str, task_id: str | None, last_event_id: int = 0, poll_s: float | None = None
) -> AsyncIterator[bytes]:
    """The SSE byte stream of one run (see the module docstring): the replay, then live events
    (or database polls while none come) until the run ends."""
    if poll_s is None:
        poll_s = _poll_interval()
    yield f"retry: {SSE_RETRY_MS}\n\n".encode()
    if task_id is None:
        yield _final(run_id, "failed", TASK_DELETED)
        return
    stream = _RunStream(run_id, task_id)
    async with _subscription(task_id) as (layer, channel):
        for message in await stream.replay(last_event_id):
            yield message
        if stream.done:
            return
        yield b": live\n\n"  # replay done; what follows is relayed as it happens
        stream.sent_at = time.monotonic()
        while not stream.done:
            event = await _receive(
                layer, channel, min(poll_s, ENDING_POLL_S) if stream.ended else poll_s
            )
            for message in await (stream.poll() if event is None else stream.on_event(event)):
                yield message
