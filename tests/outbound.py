"""One request through `apps.core.outbound.pinned_request` for the outbound tests: the origin
taken from the URL, private addresses allowed (the servers are on loopback), answers up to 1 KiB,
a deadline `seconds` from now."""

from __future__ import annotations

import time

from apps.core import outbound


def pinned(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    seconds: float = 10.0,
    max_bytes: int = 1024,
    allow_private: bool = True,
    keep_alive: outbound.KeepAlive | None = None,
) -> tuple[int, str | None, bytes]:
    return outbound.pinned_request(
        method,
        url,
        outbound.url_origin(url),
        headers or {},
        allow_private=allow_private,
        max_bytes=max_bytes,
        deadline=time.monotonic() + seconds,
        body=body,
        keep_alive=keep_alive,
    )
