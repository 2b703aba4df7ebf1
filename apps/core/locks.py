"""Locks that die with their holder.

Long work that spans a request (parsing uploads into a dataset) marks itself alive with
`alive(name)`. A later caller that finds the work's row in an unfinished state tries the same
lock: if it gets it, the worker that started the work is gone (its process was killed), so the
work was abandoned and may be cleaned up or redone; if not, it is still in progress.

On PostgreSQL it is a session advisory lock, released by the server when the holder's connection
drops, so it covers every process of a team deployment. Elsewhere (the embedded SQLite mode is one
process) it is a lock of this process.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

_local: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


def _pg_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def alive(name: str) -> Iterator[bool]:
    """Hold the lock `name` for the block if nobody else does; yields whether it was acquired
    (never waits)."""
    if connection.vendor == "postgresql":
        key = _pg_key(name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            acquired = bool(cursor.fetchone()[0])
        try:
            yield acquired
        finally:
            if acquired:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return
    with _local_guard:
        lock = _local.setdefault(name, threading.Lock())
    acquired = lock.acquire(blocking=False)
    try:
        yield acquired
    finally:
        if acquired:
            lock.release()
            with _local_guard:
                if not lock.locked():
                    _local.pop(name, None)
