"""Following long work: run events over SSE and task events over the task websocket.

Both iterators end after the job's final event, reopen a dropped connection (SSE with
`Last-Event-ID`, the websocket with `?after=<seq>`) so that no stored event is missed or repeated,
and bound what they hold (an SSE line or a websocket message past its limit is an error, never
an unbounded buffer)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx

from .errors import ConnectionFailed, NotFound, OrchardError, ServerError, Timeout, Unauthorized

if TYPE_CHECKING:
    from .client import Client

MAX_LINE = 1024 * 1024  # bytes of one SSE line
RUN_TERMINAL = ("completed", "failed", "cancelled", "stopped")
TASK_TERMINAL = ("finished", "failed", "aborted")


class SSEParser:
    """Incremental Server-Sent Events parser (the WHATWG rules that matter here)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._reset()

    def _reset(self) -> None:
        self.event, self.data, self.id = "message", [], None

    def feed(self, chunk: bytes) -> Iterator[dict]:
        self._buffer += chunk
        while True:
            cut = -1
            for sep in (b"\n", b"\r"):
                at = self._buffer.find(sep)
                if at != -1 and (cut == -1 or at < cut):
                    cut = at
            if cut == -1:
                if len(self._buffer) > MAX_LINE:
                    raise OrchardError("An event-stream line is too long.", code="BAD_RESPONSE")
                return
            line = self._buffer[:cut].decode("utf-8", errors="replace")
            skip = 2 if self._buffer[cut : cut + 2] == b"\r\n" else 1
            self._buffer = self._buffer[cut + skip :]
            event = self._line(line)
            if event is not None:
                yield event

    def _line(self, line: str) -> dict | None:
        if line == "":
            if not self.data:
                self._reset()
                return None
            event = {"event": self.event, "data": "\n".join(self.data), "id": self.id}
            self._reset()
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self.event = value
        elif field == "data":
            self.data.append(value)
        elif field == "id" and "\0" not in value:
            self.id = value
        return None


def _run_event(raw: dict) -> dict:
    try:
        data = json.loads(raw["data"])
    except ValueError:
        data = {"data": raw["data"]}
    if not isinstance(data, dict):
        data = {"data": data}
    event_id = raw.get("id")
    out: dict[str, Any] = {**data, "event": raw["event"]}
    out["id"] = int(event_id) if event_id and event_id.isdigit() else None
    return out


def _is_run_end(event: dict) -> bool:
    if event["event"] in ("complete", "error"):
        return True
    return event["event"] == "status" and event.get("status") in RUN_TERMINAL


def watch_run(
    client: Client,
    path: str,
    *,
    last_event_id: int | None = None,
    timeout: float | None = None,
    max_reconnects: int = 20,
    read_timeout: float = 60.0,
) -> Iterator[dict]:
    """Yield the run's events as dicts (`event`, `id`, and the event's JSON fields)."""
    deadline = time.monotonic() + timeout if timeout else None
    last = last_event_id
    failures = 0
    ended = False  # a final event was seen: the server closes the stream after it
    while True:
        if deadline and time.monotonic() > deadline:
            raise Timeout(f"the run did not end within {timeout} s")
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last:
            headers["Last-Event-ID"] = str(last)
        try:
            response = client.send(
                "GET",
                path,
                stream=True,
                headers=headers,
                timeout=httpx.Timeout(client.timeout, read=read_timeout),
            )
        except (ConnectionFailed, ServerError) as exc:
            failures += 1
            if failures > max_reconnects:
                raise ConnectionFailed(f"the event stream kept failing: {exc}") from exc
            time.sleep(min(0.2 * 2 ** (failures - 1), 5.0))
            continue
        parser = SSEParser()
        try:
            for chunk in response.iter_raw():
                for raw in parser.feed(chunk):
                    event = _run_event(raw)
                    if event["id"] is not None:
                        if last is not None and event["id"] <= last:
                            continue  # already seen (a server replaying too much)
                        last = event["id"]
                    failures = 0
                    ended = ended or _is_run_end(event)
                    yield event
                if deadline and time.monotonic() > deadline:
                    raise Timeout(f"the run did not end within {timeout} s")
        except httpx.TransportError:
            pass  # dropped: reconnect below with Last-Event-ID
        finally:
            response.close()
        if ended:
            return
        failures += 1
        if failures > max_reconnects:
            raise ConnectionFailed("the event stream kept dropping before the run ended.")
        time.sleep(min(0.1 * 2 ** (failures - 1), 2.0))


def watch_task(
    client: Client,
    project: str,
    task_id: str,
    *,
    timeout: float | None = None,
    max_reconnects: int = 20,
    idle_poll_s: float = 5.0,
) -> Iterator[dict]:
    """Yield the task's websocket events until its state is final (see the module docstring).

    When the socket is quiet for `idle_poll_s`, the task is read over HTTP: a final state there
    ends the watch even if its live event was lost."""
    from websockets.exceptions import ConnectionClosed

    deadline = time.monotonic() + timeout if timeout else None
    path = f"/ws/projects/{project}/tasks/{task_id}"
    after = 0
    failures = 0
    refreshed = False
    while True:
        if deadline and time.monotonic() > deadline:
            raise Timeout(f"the task did not end within {timeout} s")
        try:
            ws = client.ws_connect(path, after=after or None)
        except (ConnectionFailed, ServerError) as exc:
            failures += 1
            if failures > max_reconnects:
                raise ConnectionFailed(f"the task socket kept failing: {exc}") from exc
            time.sleep(min(0.2 * 2 ** (failures - 1), 5.0))
            continue
        try:
            ws.__enter__()  # the connection as its own context (closed in `finally`)
            while True:
                if deadline and time.monotonic() > deadline:
                    raise Timeout(f"the task did not end within {timeout} s")
                try:
                    message = ws.recv(timeout=idle_poll_s)
                except TimeoutError:
                    task = client.tasks.get(task_id, project=project)
                    if task.get("state") in TASK_TERMINAL:
                        yield {"type": "state", "polled": True, **task}
                        return
                    continue
                if isinstance(message, bytes):
                    continue
                try:
                    event = json.loads(message)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                seq = event.get("seq")
                if isinstance(seq, int):
                    if seq <= after:
                        continue
                    after = seq
                failures = 0
                yield event
                if event.get("type") == "state" and event.get("state") in TASK_TERMINAL:
                    return
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code == 4404:
                raise NotFound(f"Task {task_id} is gone (socket closed 4404).") from exc
            if code in (4401, 4403):
                if refreshed:
                    raise Unauthorized(f"The task socket refused the token ({code}).") from exc
                client.refresh()
                refreshed = True
        finally:
            ws.close()
        failures += 1
        if failures > max_reconnects:
            raise ConnectionFailed("the task socket kept dropping before the task ended.")
        time.sleep(min(0.1 * 2 ** (failures - 1), 2.0))
