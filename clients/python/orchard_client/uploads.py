"""Resumable chunked uploads: `POST .../uploads` {filename, size}, then `PUT .../uploads/{id}
?position=N` with raw chunks, each streamed from disk (never a whole chunk in memory).

A chunk that does not arrive whole is not recorded by the server, so after a broken connection
(or a 5xx, or an expired token) the client asks the session how many bytes it holds
(`received_bytes`) and goes on from there. `upload_id=` resumes a session begun earlier (another
process, a crash)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConnectionFailed, OrchardError, ServerError, Unauthorized, ValidationError

if TYPE_CHECKING:
    from .client import Client, ProgressCallback

_PIECE = 64 * 1024


def _pieces(path: Path, start: int, length: int, on_piece) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(start)
        left = length
        while left > 0:
            piece = fh.read(min(_PIECE, left))
            if not piece:
                raise OrchardError(f"{path} shrank while it was being uploaded.", code="IO_ERROR")
            left -= len(piece)
            on_piece(len(piece))
            yield piece


def upload_file(
    client: Client,
    path: Path,
    *,
    project: str,
    progress: ProgressCallback | None = None,
    chunk_size: int = 8 * 1024 * 1024,
    upload_id: str | None = None,
    max_retries: int = 8,
) -> dict:
    """Upload `path` and return the completed session (see the module docstring)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    size = path.stat().st_size
    if size < 1:
        raise ValidationError(f"{path} is empty.", code="VALIDATION_ERROR")
    uploads = client.uploads
    if upload_id:
        session = uploads.get(upload_id, project=project)
        if session.get("size") != size:
            raise ValidationError(
                f"upload {upload_id} is {session.get('size')} bytes, {path} is {size}."
            )
    else:
        session = uploads.create(path.name, size, project=project)
    base = f"/api/projects/{project}/uploads/{session['id']}"
    position = int(session.get("received_bytes") or 0)
    failures = 0
    if progress:
        progress(position, size)
    while position < size:
        length = min(chunk_size, size - position)
        sent = [position]

        def on_piece(n: int, sent: list = sent) -> None:
            sent[0] += n
            if progress:
                progress(sent[0], size)

        try:
            session = client.request(
                "PUT",
                base,
                params={"position": position},
                content=_pieces(path, position, length, on_piece),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(length),
                },
                retry_auth=False,  # a generator body cannot be sent twice: retried below
            )
            position = int(session.get("received_bytes", position + length))
            failures = 0
            continue
        except (ConnectionFailed, ServerError, Unauthorized, ValidationError) as exc:
            if isinstance(exc, ValidationError) and "ended after" not in (
                exc.message + str(exc.details)
            ):
                raise  # a real refusal; only a body cut short (a server that streams) is retried
            failures += 1
            if failures > max_retries:
                raise ConnectionFailed(
                    f"upload of {path} gave up after {max_retries} retries: {exc}"
                ) from exc
            if isinstance(exc, Unauthorized):
                client.refresh()
            else:
                time.sleep(min(0.2 * 2 ** (failures - 1), 5.0))
        # Ask the server what arrived (itself retried: the server may be restarting).
        position = _received(client, session["id"], project, max_retries)
        if progress:
            progress(position, size)
    if progress:
        progress(size, size)
    return session if session.get("complete") else uploads.get(session["id"], project=project)


def _received(client: Client, upload_id: str, project: str, max_retries: int) -> int:
    for attempt in range(max_retries + 1):
        try:
            return int(client.uploads.get(upload_id, project=project)["received_bytes"])
        except (ConnectionFailed, ServerError):
            if attempt == max_retries:
                raise
            time.sleep(min(0.2 * 2**attempt, 5.0))
    raise AssertionError("unreachable")
