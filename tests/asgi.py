"""The ASGI `http` scope a server such as daphne hands the application, for tests that call
`config.asgi.application` directly (bodies in pieces, disconnects, streamed answers)."""

from __future__ import annotations

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
