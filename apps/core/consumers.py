"""Base websocket consumers. Tenancy for sockets is enforced here, before `accept()`.

`ProjectScopedConsumer` resolves the caller's ProjectAccess from the URL's `project_id` and the
authenticated scope user (see `apps.accounts.ws`), then calls `authorize(access)` where subclasses
fetch their object with the scoped querysets. Anything raising NotFound/Unauthorized/Forbidden closes
the socket with 4404/4401/4403 (4409 for a conflict) before any model is touched.

Rights are not only checked once: every `WEBSOCKET_RECHECK_S` seconds (default 5) an open socket
re-resolves them (the user still active, the token not expired, still a member, the object still
visible: `reauthorize`) and is closed with the same close codes when they are gone, so a socket
does not outlive a removed membership, a deactivated user or a deleted object.
"""

import asyncio
import logging
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.core.conf import number_setting
from apps.core.exceptions import Conflict, Forbidden, NotFound, OrchardError, Unauthorized
from apps.core.tenancy import ProjectAccess, project_access

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_CONFLICT = 4409

_GUARDED = ("connect", "websocket_connect", "websocket_disconnect")


def websocket_recheck_s() -> float:
    """Seconds between two re-checks of an open socket's rights (`WEBSOCKET_RECHECK_S`)."""
    return max(number_setting("WEBSOCKET_RECHECK_S"), 0.005)


def token_expired(token) -> bool:
    """True when the socket's token (a simplejwt token or its payload) has expired."""
    exp = token.get("exp") if token is not None else None
    return isinstance(exp, int | float) and time.time() >= exp


def active_user(user_id):
    """The user if still active, else Unauthorized (sync)."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise Unauthorized("The account is no longer active.")
    return user


class RecheckLoop:
    """Runs `check` (async, raises OrchardError when rights are gone) every
    `websocket_recheck_s()` seconds until cancelled; on a refusal awaits `on_refused(exc)`."""

    def __init__(self, check, on_refused):
        self.check = check
        self.on_refused = on_refused
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def cancel(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        self.task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(websocket_recheck_s())
            try:
                await self.check()
            except OrchardError as exc:
                self.task = None
                await self.on_refused(exc)
                return
            except Exception:  # a database hiccup: keep the socket, check again next time
                logger.warning("websocket rights re-check failed", exc_info=True)


def close_code_for(exc: Exception) -> int:
    if isinstance(exc, Unauthorized):
        return CLOSE_UNAUTHORIZED
    if isinstance(exc, Forbidden):
        return CLOSE_FORBIDDEN
    if isinstance(exc, NotFound):
        return CLOSE_NOT_FOUND
    if isinstance(exc, Conflict):
        return CLOSE_CONFLICT
    return 4000


# What daphne (autobahn) raises for a send on a socket the client has already closed.
_CLIENT_GONE: tuple[type[BaseException], ...]
try:
    from autobahn.exception import Disconnected

    _CLIENT_GONE = (Disconnected,)
except ImportError:  # another ASGI server
    _CLIENT_GONE = ()


class ClosesOnceMixin:
    """Once the server closes a socket (or finds the client gone), the socket is done: frames
    and channel-layer events that still arrive before the client's close handshake completes
    are dropped, and sends are no-ops. daphne refuses a send on a closing socket with an
    exception that would end the consumer before `disconnect()` runs, keeping its group
    membership and what it holds (a direct-io runtime's connection).

    Every send of a consumer (text, bytes, JSON, close) ends in channels' `base_send`, which
    the consumer stores when it starts: this mixin guards it there."""

    closing = False

    @property
    def base_send(self):
        return self._guarded_send

    @base_send.setter
    def base_send(self, send) -> None:
        async def guarded_send(message):
            if self.closing:
                return
            if message.get("type") == "websocket.close":
                self.closing = True
            try:
                await send(message)
            except _CLIENT_GONE:
                self.closing = True  # daphne delivers websocket.disconnect next

        self._guarded_send = guarded_send

    async def dispatch(self, message):
        if self.closing and message["type"] != "websocket.disconnect":
            return
        await super().dispatch(message)


class DatabaseFreeReceiveMixin:
    """For sockets whose message handler touches no database once open (direct io): received
    frames go straight to the handler, without channels' per-message close_old_connections(), a
    thread hop that costs more than a small model's forward pass. Other events dispatch as usual."""

    def database_free_receive(self) -> bool:
        """True once the socket's hot path is set up."""
        return False

    async def dispatch(self, message):
        if message["type"] == "websocket.receive" and self.database_free_receive():
            if not getattr(self, "closing", False):  # see ClosesOnceMixin
                await self.websocket_receive(message)
            return
        await super().dispatch(message)


class ProjectScopedConsumer(ClosesOnceMixin, AsyncJsonWebsocketConsumer):
    """A JSON websocket inside one project; subclasses implement `authorize` and `on_open`."""

    access: ProjectAccess

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in _GUARDED:
            if name in cls.__dict__:
                raise TypeError(f"{cls.__qualname__} overrides {name}(); implement authorize().")

    async def connect(self):
        user = self.scope.get("user")
        try:
            if user is None or not user.is_authenticated:
                raise Unauthorized()
            route = self.scope["url_route"]["kwargs"]
            if any("\x00" in str(value) for value in route.values()):
                # No id holds a NUL (PostgreSQL cannot even compare one): 404, as over HTTP.
                raise NotFound()
            project_id = route.get("project_id")
            self.access = await database_sync_to_async(project_access)(
                user=user, project_id=project_id
            )
            await database_sync_to_async(self.authorize)(self.access)
        except OrchardError as exc:
            await self.close(code=close_code_for(exc))
            return
        await self.accept(self.scope.get("accepted_subprotocol"))
        await self.on_open()
        self._rights_loop = RecheckLoop(self._recheck, self._refused)
        self._rights_loop.start()

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        """A frame that is not a JSON text (empty, binary, malformed) reaches `receive_json` as
        None, which each socket answers as a frame of the wrong shape (channels' own receive
        raised, and the socket died with 1011)."""
        content = None
        if text_data:
            try:
                content = await self.decode_json(text_data)
            except (ValueError, RecursionError):  # RecursionError: nested deeper than json goes
                content = None
        await self.receive_json(content, **kwargs)

    async def websocket_disconnect(self, message):
        loop = getattr(self, "_rights_loop", None)
        if loop is not None:
            loop.cancel()
        await super().websocket_disconnect(message)

    async def _recheck(self) -> None:
        if token_expired(self.scope.get("token")):
            raise Unauthorized("Token is invalid or expired.")
        await database_sync_to_async(self._recheck_sync)()

    def _recheck_sync(self) -> None:
        user = active_user(self.access.user.pk)
        access = project_access(user=user, project_id=self.access.project.pk)
        self.reauthorize(access)
        self.access = access

    async def _refused(self, exc: OrchardError) -> None:
        await self.close(code=close_code_for(exc))

    def authorize(self, access: ProjectAccess) -> None:
        """Fetch the socket's object through the scoped querysets (sync, in a thread)."""
        raise NotImplementedError

    def reauthorize(self, access: ProjectAccess) -> None:
        """Sync, every WEBSOCKET_RECHECK_S: raise (NotFound, Forbidden) when `access` may no
        longer use the socket's object. The membership itself is re-checked by the caller."""

    async def on_open(self) -> None:
        """Called after accept(): join groups, send a first message."""
