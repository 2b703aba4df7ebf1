"""The ASGI `http` scope a server such as daphne hands the application, for tests that call
`config.asgi.application` directly (bodies in pieces, disconnects, streamed answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


def http_scope(method: str, url: str, headers: Sequence[tuple[bytes, bytes]] = (), **extra) -> dict:
    """`url` is a path with an optional `?query`; a `host` header comes first unless given."""
    path, _, query = url.partition("?")
    if not any(name == b"host" for name, _ in headers):
        headers = [(b"host", b"testserver"), *headers]
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "scheme": "http",
        "headers": list(headers),
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        **extra,
    }


async def exchange(scope: dict, messages: list[dict], timeout: float = 30) -> list[dict]:
    """Call `config.asgi.application` with `scope` as an ASGI server would: its `receive` hands
    out `messages` in order and then stays connected (nothing more comes: the application must
    not ask). The messages the application sent back."""
    from config.asgi import application

    pending, sent = list(messages), []

    async def receive():
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(application(scope, receive, send), timeout)
    return sent
