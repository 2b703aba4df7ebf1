"""Request body limits, enforced from Content-Length before the body is read.

`BodySizeLimitASGIMiddleware` wraps the ASGI application (daphne/uvicorn read the body for Django,
so this is the layer that can refuse early, and it also counts bytes of bodies sent without a
length). `BodySizeLimitMiddleware` applies the same rule inside Django (WSGI and the test client).
"""

import json

from django.conf import settings
from django.http import JsonResponse

_UPLOAD_TYPES = ("multipart/form-data", "application/octet-stream", "application/zip")


def body_limit(content_type: str) -> int:
    """The byte limit for a request of this Content-Type."""
    content_type = (content_type or "").split(";")[0].strip().lower()
    if content_type in _UPLOAD_TYPES:
        return settings.UPLOAD_MAX_BYTES
    return settings.API_MAX_BODY_BYTES


def too_large_body(path: str, limit: int) -> dict:
    """The 413 answer in the format of the surface that owns `path`."""
    message = f"Request body exceeds the limit of {limit} bytes."
    if path.startswith("/api/"):
        return {"status": "error", "error": {"code": "PAYLOAD_TOO_LARGE", "message": message}}
    if path.startswith("/ml/"):  # Label Studio ML backends: label-studio-ml-backend's errors
        return {"status": 413, "detail": message}
    return {"error": message}


class BodySizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        length = request.META.get("CONTENT_LENGTH") or "0"
        limit = body_limit(request.META.get("CONTENT_TYPE", ""))
        try:
            too_large = int(length) > limit
        except ValueError:
            too_large = False
        if too_large:
            return JsonResponse(too_large_body(request.path, limit), status=413)
        return self.get_response(request)


class BodySizeLimitASGIMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        limit = body_limit(headers.get(b"content-type", b"").decode("latin-1"))
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return await self._refuse(scope, send, limit)

        received = 0
        refused = False

        async def limited_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not refused:
                    refused = True
                    await self._refuse(scope, send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        return await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, scope, send, limit):
        body = json.dumps(too_large_body(scope.get("path", ""), limit)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
