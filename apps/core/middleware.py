"""Request body limits, enforced from Content-Length before the body is read.

`BodySizeLimitASGIMiddleware` wraps the ASGI application (daphne/uvicorn read the body for Django,
so this is the layer that can refuse early, and it also counts bytes of bodies sent without a
length). `BodySizeLimitMiddleware` applies the same rule inside Django (WSGI and the test client).

Only an upload route (a view that declares `accepts_uploads = True`) takes UPLOAD_MAX_BYTES, and
only for an upload Content-Type; every other request is capped at API_MAX_BODY_BYTES whatever its
Content-Type says (a client cannot lift the limit by declaring `application/octet-stream`).

The refusal is written in the format of the surface that owns the path (`apps.core.errors`): the
main API's envelope under `/api/`, a protocol surface's own shape (and status: Hanami's SDK knows a
400, not a 413) where it registered one, else `{"error": message}`.
"""

import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse
from django.urls import Resolver404, resolve

from apps.core.asgi import body_length
from apps.core.errors import surface_answer

_UPLOAD_TYPES = ("multipart/form-data", "application/octet-stream", "application/zip")


def _match(path: str):
    try:
        return resolve(path)
    except Resolver404:
        return None


def is_upload_route(path: str) -> bool:
    """Whether the view that serves `path` takes file bodies (`accepts_uploads`)."""
    match = _match(path)
    func = match.func if match is not None else None
    view = getattr(func, "cls", None) or getattr(func, "view_class", None)
    return bool(getattr(view, "accepts_uploads", False))


def body_limit(path: str, content_type: str) -> tuple[str, int]:
    """The (setting name, byte limit) of a request body for `path` with this Content-Type."""
    content_type = (content_type or "").split(";")[0].strip().lower()
    if content_type in _UPLOAD_TYPES and is_upload_route(path):
        return "UPLOAD_MAX_BYTES", int(settings.UPLOAD_MAX_BYTES)
    return "API_MAX_BODY_BYTES", int(settings.API_MAX_BODY_BYTES)


def too_large_body(path: str, name: str, limit: int, caller=None) -> tuple[int, str, bytes]:
    """The refusal (status, content type, body) in the format of the surface that owns `path`:
    413, or the status that surface gives a body over its limit (Hanami's SDK knows 400).

    A view may render its own: a class attribute `too_large_answer(caller, url_name, message)`
    returning (content type, body) or None (`caller` is the request, or the ASGI scope; it may
    touch the database). labelprop's routes answer plain text there, and its session routes a
    refused session's token, so the napari client shows the reason instead of polling for it
    forever."""
    message = f"Request body exceeds the limit of {limit} bytes ({name})."
    match = _match(path)
    func = match.func if match is not None else None
    view = getattr(func, "cls", None) or getattr(func, "view_class", None)
    hook = getattr(view, "too_large_answer", None)
    if hook is not None and caller is not None:
        answer = hook(caller, match.url_name, message)
        if answer is not None:
            return (413, *answer)
    answer = surface_answer(path, 413, message)
    if answer is not None:
        return answer
    return 413, "application/json", json.dumps({"error": message}).encode()


class BodySizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        length = request.META.get("CONTENT_LENGTH") or "0"
        name, limit = body_limit(request.path_info, request.META.get("CONTENT_TYPE", ""))
        try:
            too_large = int(length) > limit
        except ValueError:
            too_large = False
        if too_large:
            status, content_type, body = too_large_body(request.path_info, name, limit, request)
            return HttpResponse(body, status=status, content_type=content_type)
        return self.get_response(request)


def _path_info(scope) -> str:
    """The path Django resolves: the scope's path less the application's root path."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class BodySizeLimitASGIMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        name, limit = body_limit(
            _path_info(scope), headers.get(b"content-type", b"").decode("latin-1")
        )
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return await self._refuse(scope, send, name, limit)

        received = 0
        refused = False

        async def limited_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += body_length(message)
                if received > limit and not refused:
                    refused = True
                    await self._refuse(scope, send, name, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        return await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, scope, send, name, limit):
        status, content_type, body = await sync_to_async(too_large_body)(
            _path_info(scope), name, limit, scope
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
