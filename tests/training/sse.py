"""A small SSE client over the real ASGI application (config.asgi.application), reading the
streamed body chunk by chunk with asgiref's ApplicationCommunicator."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from asgiref.testing import ApplicationCommunicator

from tests.asgi import http_scope


@dataclass
class SSEEvent:
    event: str
    data: dict
    id: int | None = None


@dataclass
class SSEClient:
    communicator: ApplicationCommunicator
    status: int = 0
    headers: dict = field(default_factory=dict)
    buffer: str = ""
    finished: bool = False
    comments: list = field(default_factory=list)
    retry: int | None = None

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        token: str | None = None,
        last_event_id: str | int | None = None,
        query: str = "",
        timeout: float = 10,
    ) -> SSEClient:
        from config.asgi import application

        headers = [(b"accept", b"text/event-stream"), (b"host", b"testserver")]
        if token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        if last_event_id is not None:
            headers.append((b"last-event-id", str(last_event_id).encode()))
        scope = http_scope(
            "GET",
            f"{path}?{query}" if query else path,
            headers,
            asgi={"version": "3.0", "spec_version": "2.3"},
            client=("127.0.0.1", 50000),
        )
        client = cls(ApplicationCommunicator(application, scope))
        await client.communicator.send_input(
            {"type": "http.request", "body": b"", "more_body": False}
        )
        start = await client.communicator.receive_output(timeout)
        assert start["type"] == "http.response.start", start
        client.status = start["status"]
        client.headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return client

    async def body(self, timeout: float = 10) -> str:
        """The rest of the body (for error answers and finished streams)."""
        while not self.finished:
            await self._read(timeout)
        text, self.buffer = self.buffer, ""
        return text

    async def _read(self, timeout: float) -> None:
        message = await self.communicator.receive_output(timeout)
        assert message["type"] == "http.response.body", message
        self.buffer += message.get("body", b"").decode()
        if not message.get("more_body", False):
            self.finished = True

    async def next_event(self, timeout: float = 10) -> SSEEvent | None:
        """The next event, or None when the stream ended."""
        while True:
            if "\n\n" in self.buffer:
                block, self.buffer = self.buffer.split("\n\n", 1)
                event = self._parse(block)
                if event is not None:
                    return event
                continue
            if self.finished:
                return None
            await self._read(timeout)

    async def wait_live(self, timeout: float = 10) -> None:
        """Read until the stream says its replay is done (the `: live` comment)."""
        while ": live" not in self.comments:
            if self.finished and "\n\n" not in self.buffer:
                raise AssertionError("the stream ended before going live")
            if "\n\n" in self.buffer:
                block, self.buffer = self.buffer.split("\n\n", 1)
                event = self._parse(block)
                assert event is None, f"unexpected event before going live: {event}"
                continue
            await self._read(timeout)

    async def events_until_end(self, timeout: float = 20) -> list[SSEEvent]:
        events = []
        while (event := await self.next_event(timeout)) is not None:
            events.append(event)
        return events

    def _parse(self, block: str) -> SSEEvent | None:
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if "retry" in fields and "data" not in fields:
            self.retry = int(fields["retry"])
            return None
        if "data" not in fields:
            return None
        return SSEEvent(
            event=fields.get("event", "message"),
            data=json.loads(fields["data"]),
            id=int(fields["id"]) if "id" in fields else None,
        )

    async def close(self) -> None:
        if not self.finished:
            await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(timeout=5)
