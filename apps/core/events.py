"""Event publishing to the channel layer: one group per task (or run), relayed by websockets/SSE.

Publishing never fails the caller: a broken channel layer loses a live update, not the work (the
database row stays the truth and clients can replay stored metrics).

Worker threads of the embedded mode publish into the in-memory channel layer, whose queues belong
to the ASGI server's event loop: a put from another thread would not wake that loop (the event
would sit there until something else woke it). So those sends are handed to the server's loop,
which the ASGI application records (`remember_loop`) on every connection. The caller does not wait
for the loop to run the send (the in-memory layer only appends to queues, in the order the sends
were handed over): waiting cost a training thread two GIL hand-offs per event, 1.5 ms per epoch
of a small Hanami train task.

Other layers (Redis in team mode) are sent to from sync code on one event loop per process that a
daemon thread keeps running (`_publisher_loop`): `async_to_sync` started a thread and an event loop
per event, and channels-redis a connection pool per loop, so every event paid a new Redis
connection (about 2 ms of CPU each, three per request task; 0.25 ms on the kept loop).
"""

import asyncio
import functools
import logging
import os
import re
import threading

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

logger = logging.getLogger(__name__)
_GROUP_SAFE = re.compile(r"[^a-zA-Z0-9_.-]")
# Events are best effort: a publish that the layer has not taken within this is given up (logged),
# so a Redis that stops answering delays a worker's step by this much, not forever.
_PUBLISH_TIMEOUT_S = 5.0
_server_loop: asyncio.AbstractEventLoop | None = None
_publisher: tuple[int, asyncio.AbstractEventLoop] | None = None  # (pid, loop)
_publisher_layer: object = None  # the layer last sent to on that loop
_publisher_lock = threading.Lock()


def group_name(kind: str, ident: object) -> str:
    """A channel-layer group name (only ASCII letters, digits, hyphens, underscores, periods)."""
    return _GROUP_SAFE.sub("_", f"{kind}.{ident}")[:99]


def remember_loop() -> None:
    """Called by the ASGI application on the server's event loop."""
    global _server_loop
    _server_loop = asyncio.get_running_loop()


def _foreign_thread_of(loop: asyncio.AbstractEventLoop | None) -> bool:
    if loop is None or not loop.is_running() or loop.is_closed():
        return False
    try:
        return asyncio.get_running_loop() is not loop
    except RuntimeError:  # no loop in this thread: a worker thread
        return True


def _publisher_loop() -> asyncio.AbstractEventLoop:
    """This process's publishing loop (started on first use; again in a forked child)."""
    global _publisher
    with _publisher_lock:
        if _publisher is None or _publisher[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="orchard-publish", daemon=True).start()
            _publisher = (os.getpid(), loop)
        return _publisher[1]


async def _send_on_publisher(layer, group: str, message: dict) -> None:
    """Runs on the publishing loop. A layer replaced since the last event (each test gets a new
    one) gives back the connections it holds on this loop first."""
    global _publisher_layer
    old, _publisher_layer = _publisher_layer, layer
    if old is not None and old is not layer and hasattr(old, "close_pools"):
        try:
            await old.close_pools()
        except Exception:
            logger.debug("closing a replaced channel layer's connections failed", exc_info=True)
    await layer.group_send(group, message)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def publish(group: str, event: dict) -> None:
    """Send `event` to every consumer of `group` (type 'orchard.event')."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "orchard.event", "event": event}
    try:
        loop = _server_loop
        if (
            loop is not None
            and isinstance(layer, InMemoryChannelLayer)
            and _foreign_thread_of(loop)
        ):
            handed = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
            handed.add_done_callback(functools.partial(_log_failed_send, group))
        elif not isinstance(layer, InMemoryChannelLayer) and not _in_event_loop():
            send = _send_on_publisher(layer, group, message)
            future = asyncio.run_coroutine_threadsafe(send, _publisher_loop())
            try:
                future.result(timeout=_PUBLISH_TIMEOUT_S)
            except TimeoutError:
                future.cancel()  # a hung layer (Redis not answering) must not hold the caller
                raise
        else:
            async_to_sync(layer.group_send)(group, message)
    except Exception:
        logger.warning("could not publish to %s", group, exc_info=True)


def _log_failed_send(group: str, handed) -> None:
    if not handed.cancelled() and handed.exception() is not None:
        logger.warning("could not publish to %s", group, exc_info=handed.exception())


class RememberLoopMiddleware:
    """ASGI middleware: records the server's event loop for `publish`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        remember_loop()
        return await self.app(scope, receive, send)
