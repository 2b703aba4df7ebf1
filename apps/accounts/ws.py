"""Websocket authentication and origin checks (Channels middleware).

The token may come as `?token=...`, an `Authorization: Bearer` header, or a
`Sec-WebSocket-Protocol` entry `bearer.<token>` (browsers cannot set headers). Protocol handshakes
that carry the token in their first message (the Hanami socket) authenticate in the consumer with
`user_for_token` instead. A bad token leaves the scope anonymous; consumers refuse anonymous users.
"""

from urllib.parse import parse_qs, urlparse

from channels.db import database_sync_to_async
from django.conf import settings

from apps.accounts.authentication import user_for_token
from apps.core.exceptions import Unauthorized


def token_from_scope(scope) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    auth = headers.get(b"authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:]
    for proto in scope.get("subprotocols", []):
        if proto.startswith("bearer."):
            return proto[len("bearer.") :]
    return None


class JWTAuthMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        scope["user"], scope["token"] = None, None
        raw = token_from_scope(scope)
        if raw:
            try:
                scope["user"], scope["token"] = await database_sync_to_async(user_for_token)(raw)
            except Unauthorized:
                pass
        return await self.app(scope, receive, send)


class OriginCheckMiddleware:
    """Refuse browser websockets from origins outside ALLOWED_HOSTS / WEBSOCKET_ALLOWED_ORIGINS.

    Clients without an Origin header (SDKs, scripts) are not browsers and are let through; they
    still need a valid token.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            origin = dict(scope.get("headers", [])).get(b"origin")
            if origin is not None and not origin_allowed(origin.decode("latin-1")):
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 4403})
                return
        return await self.app(scope, receive, send)


def origin_allowed(origin: str) -> bool:
    if origin in settings.WEBSOCKET_ALLOWED_ORIGINS or "*" in settings.WEBSOCKET_ALLOWED_ORIGINS:
        return True
    host = urlparse(origin).hostname or ""
    for allowed in settings.ALLOWED_HOSTS:
        allowed = allowed.strip("[]")
        if (
            allowed == "*"
            or host == allowed
            or (allowed.startswith(".") and host.endswith(allowed))
        ):
            return True
    return False
