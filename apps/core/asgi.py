"""Django's ASGI handler, with request bodies kept in memory up to a bound and the middleware chain
run in one thread hop.

Django's `ASGIHandler.read_body` copies every body into a `SpooledTemporaryFile` that rolls over
to a disk file past FILE_UPLOAD_MAX_MEMORY_SIZE (2 MiB), written from the event loop: an 8 MiB
upload chunk went to a temporary file and was read back before the view wrote it to the upload
(a third of a chunked MNIST upload's server time), and a large body's disk writes held up every
other connection of the server meanwhile.

`OrchardASGIHandler` keeps a body of up to REQUEST_BODY_MEMORY_BYTES (16 MiB) as the messages'
own bytes (`ChunksReader`: the view reads them without a copy; the ASGI server held them
already), and spools a larger one to a temporary file (FILE_UPLOAD_TEMP_DIR) written off the
event loop. A body daphne already holds in a temporary file comes as a `SpilledBody` and is read
in place (no copy, nothing in memory). A client that goes away mid-body ends the request as
Django's does (`RequestAborted`, the partial file closed).

The middleware chain and the view run in one call on the request's thread (`get_response_async`),
not one thread hop per middleware hook as Django's async chain does with synchronous middleware;
request threads are kept between requests (`RequestThreads`, REQUEST_THREADS_KEPT), with their
database connections.
"""

from __future__ import annotations

import collections
import io
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler


class SpilledBody(bytes):
    """A whole request body that the ASGI server already wrote to a temporary file, handed over
    as the body of its one `http.request` message: no bytes of its own (so a reader that knows
    nothing of it sees an empty body), the open file in `file` and its length in `size`. The
    receiver owns the file: `OrchardASGIHandler` reads it in place as the request body and
    Django closes it when the request ends. Made by `config.daphne.BodyBuffer`: daphne read a
    body back from its file into the application's queue whole (a 2 GiB upload held in memory
    at once, after a second copy on disk)."""

    file: Any
    size: int

    def __new__(cls, file: Any, size: int) -> SpilledBody:
        body = super().__new__(cls, b"")
        body.file, body.size = file, size
        return body


def body_length(message: dict) -> int:
    """The length of an `http.request` message's body, a `SpilledBody`'s included."""
    body = message.get("body", b"")
    return body.size if isinstance(body, SpilledBody) else len(body or b"")


class ChunksReader(io.RawIOBase):
    """A body read from the bytes objects it arrived in: a read of exactly one of them returns it
    as it is (no copy), others join what they take."""

    def __init__(self, chunks: list[bytes]):
        super().__init__()
        self._chunks = collections.deque(chunk for chunk in chunks if chunk)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        chunks = self._chunks
        if size is None or size < 0:
            data = b"".join(chunks)
            chunks.clear()
            return data
        pieces, wanted = [], size
        while wanted > 0 and chunks:
            chunk = chunks[0]
            if len(chunk) <= wanted:
                pieces.append(chunks.popleft())
                wanted -= len(chunk)
            else:
                pieces.append(chunk[:wanted])
                chunks[0] = chunk[wanted:]
                wanted = 0
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        pieces, taken = [], 0
        while self._chunks and (limit < 0 or taken < limit):
            chunk = self._chunks[0]
            end = chunk.find(b"\n") + 1 or len(chunk)
            if limit >= 0:
                end = min(end, limit - taken)
            pieces.append(self.read(end))
            taken += end
            if pieces[-1].endswith(b"\n"):
                break
        return b"".join(pieces)

    def close(self) -> None:
        self._chunks.clear()
        super().close()


def _spool(chunks: list[bytes]):
    body_file = tempfile.TemporaryFile(mode="w+b", dir=settings.FILE_UPLOAD_TEMP_DIR)
    try:
        body_file.writelines(chunks)
    except BaseException:
        body_file.close()
        raise
    return body_file


def _append(body_file, spilled: SpilledBody) -> None:
    with spilled.file as source:
        source.seek(0)
        shutil.copyfileobj(source, body_file)


class RequestThread(ThreadPoolExecutor):
    """The thread a request's synchronous code runs on (one worker), counting the calls it has
    not finished: a request whose client went away leaves its view running here."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="request")
        self.pending = 0
        self._count = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        with self._count:
            self.pending += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future) -> None:
        with self._count:
            self.pending -= 1


class RequestThreads:
    """Request threads kept between requests, at most `keep` idle ones (used from the event loop
    only). Django starts a thread for each request (and asgiref another to join it), so each
    request also opened its own database connection: on SQLite the first statement of a
    connection parses the whole schema (1.3 ms, a sixth of a small request). A kept thread keeps
    its connection (CONN_MAX_AGE, see the settings); requests beyond `keep` at once get a thread
    of their own, as before."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._idle: list[RequestThread] = []

    def take(self) -> RequestThread:
        return self._idle.pop() if self._idle else RequestThread()

    def give_back(self, thread: RequestThread) -> None:
        if thread.pending or len(self._idle) >= self.keep:
            thread.shutdown(wait=False)  # it ends once what it still runs has returned
        else:
            self._idle.append(thread)

    def __len__(self) -> int:
        return len(self._idle)


class OrchardASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.threads = RequestThreads(int(settings.REQUEST_THREADS_KEPT))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = self.threads.take()
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            self.threads.give_back(thread)

    def load_middleware(self, is_async=False):
        """The middleware chain is built synchronously (as under WSGI), whatever the caller:
        every middleware Orchard loads is synchronous code (Django's own are MiddlewareMixin
        classes), and in an async chain each of their process_request/process_response calls
        went to the request's thread and back on its own."""
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        """The whole chain and the view in one trip to the request's thread (`__call__`):
        Django's async chain made one trip per middleware hook (about 17 per request), which
        doubled a plain GET's server CPU."""
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)

    async def read_body(self, receive):
        limit = int(settings.REQUEST_BODY_MEMORY_BYTES)
        chunks: list[bytes] = []
        held = 0
        body_file = None
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise RequestAborted()  # the client went away before the end of its body
                chunk = message.get("body", b"")
                if isinstance(chunk, SpilledBody):
                    if body_file is None and not chunks:
                        body_file = chunk.file  # the whole body, on disk already: read in place
                    else:  # a spilled piece after others (daphne sends it alone): appended
                        if body_file is None:
                            body_file = await sync_to_async(_spool, thread_sensitive=False)(chunks)
                            chunks, held = [], 0
                        await sync_to_async(_append, thread_sensitive=False)(body_file, chunk)
                elif chunk:
                    if body_file is not None:
                        await sync_to_async(body_file.write, thread_sensitive=False)(chunk)
                    elif held + len(chunk) <= limit:
                        chunks.append(chunk)
                        held += len(chunk)
                    else:
                        chunks.append(chunk)
                        body_file = await sync_to_async(_spool, thread_sensitive=False)(chunks)
                        chunks, held = [], 0
                if not message.get("more_body", False):
                    break
        except BaseException:
            if body_file is not None:
                body_file.close()
            raise
        if body_file is None:
            return ChunksReader(chunks)
        body_file.seek(0)
        return body_file


def get_asgi_application() -> OrchardASGIHandler:
    """`django.core.asgi.get_asgi_application` with Orchard's handler."""
    django.setup(set_prefix=False)
    return OrchardASGIHandler()
