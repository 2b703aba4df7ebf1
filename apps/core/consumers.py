"""Base websocket consumers. Tenancy for sockets is enforced here, before `accept()`.

`ProjectScopedConsumer` resolves the caller's ProjectAccess from the URL's `project_id` and the
authenticated scope user (see `apps.accounts.ws`), then calls `authorize(access)` where subclasses
fetch their object with the scoped querysets. Anything raising NotFound/Unauthorized/Forbidden closes
the socket with 4404/4401/4403 (4409 for a conflict) before any model is touched.
"""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.core.exceptions import Conflict, Forbidden, NotFound, OrchardError, Unauthorized
from apps.core.tenancy import ProjectAccess, project_access

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_CONFLICT = 4409

_GUARDED = ("connect", "websocket_connect")


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


class DatabaseFreeReceiveMixin:
    """For sockets whose message handler touches no database once open (direct io): received
    frames go straight to the handler, without channels' per-message close_old_connections(), a
    thread hop that costs more than a small model's forward pass. Other events dispatch as usual."""

    def database_free_receive(self) -> bool:
        """True once the socket's hot path is set up."""
        return False

    async def dispatch(self, message):
        if message["type"] == "websocket.receive" and self.database_free_receive():
            await self.websocket_receive(message)
            return
        await super().dispatch(message)


class ProjectScopedConsumer(AsyncJsonWebsocketConsumer):
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
            project_id = self.scope["url_route"]["kwargs"].get("project_id")
            self.access = await database_sync_to_async(project_access)(
                user=user, project_id=project_id
            )
            await database_sync_to_async(self.authorize)(self.access)
        except OrchardError as exc:
            await self.close(code=close_code_for(exc))
            return
        await self.accept(self.scope.get("accepted_subprotocol"))
        await self.on_open()

    def authorize(self, access: ProjectAccess) -> None:
        """Fetch the socket's object through the scoped querysets (sync, in a thread)."""
        raise NotImplementedError

    async def on_open(self) -> None:
        """Called after accept(): join groups, send a first message."""
