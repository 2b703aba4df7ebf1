"""Wire format of the labelprop surface: plain-text answers (tokens, comma-joined lists, short
error texts), npz bytes from `/download_inference`, JSON from `/get_session_info`.

The napari client shows any body it cannot read as an npz as "Server-side error: <body>", so
every error is a short plain-text message, never an HTML page or a JSON envelope. On
`/inference` and `/training` the client takes any answer for a session token and polls for
it: there, once the surface answers the caller, a refusal keeps its status but its body is the
token of a session failed with the message (`views._SessionStartView`; the message is also in
the `X-Labelprop-Error` header). A refusal of the whole surface (404, 503, a cross-site 403)
reads the same on every route, `/get_session_list` included, which ends the client's loop too.

| error                                                             | status |
|-------------------------------------------------------------------|--------|
| ValidationFailed, ParseError (a missing part, not an npz, params not JSON) | 400 |
| Forbidden (read-only service identity; a cross-site Origin)       | 403    |
| NotFound (surface off, client address not allowed, unknown token) | 404    |
| MethodNotAllowed                                                  | 405    |
| Conflict (session not finished, session failed)                   | 409    |
| PayloadTooLarge (a limit, named), RequestDataTooBig, MemoryError  | 413    |
| UnsupportedMediaType (not multipart where a file is expected)     | 415    |
| Misconfigured (enabled, but the project or service user is wrong) | 503    |
| anything else (logged, message hidden)                            | 500    |
"""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpResponse
from rest_framework import exceptions as drf
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer

from apps.core.exceptions import OrchardError, ValidationFailed

logger = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"


class Misconfigured(OrchardError):
    """The surface is enabled but its project or service identity cannot be used."""

    code, status, default_message = "SERVICE_UNAVAILABLE", 503, "labelprop is misconfigured."


class PlainTextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, bytes):
            return data
        return str("" if data is None else data).encode("utf-8")


class TextNegotiation(DefaultContentNegotiation):
    """Parsers by Content-Type as usual; always the plain-text renderer, whatever Accept says."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def text(body: str, status: int = 200) -> HttpResponse:
    return HttpResponse(body, status=status, content_type=TEXT)


def error_answer(status: int, message: str) -> tuple[int, str, bytes]:
    """An error answered outside the views on a labelprop route (a Host not served, an error in
    middleware: `apps.core.errors`; registered by MlbackendConfig.ready): plain text."""
    return status, TEXT, message.encode()


def header_safe(message: str, limit: int = 300) -> str:
    """A message as an HTTP header value: printable ASCII only, bounded."""
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in str(message))
    return cleaned[:limit]


def status_and_message(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, OrchardError):
        if isinstance(exc, ValidationFailed):
            return 400, exc.message
        if exc.status < 500 or exc.status == 503:
            return exc.status, exc.message
        return 500, "Internal error."
    if isinstance(exc, RequestDataTooBig):
        return 413, "Request body too large."
    if isinstance(exc, Http404):
        return 404, "Not found."
    if isinstance(exc, drf.APIException) and exc.status_code < 500:
        return exc.status_code, str(exc.detail)
    return 500, "Internal error."


def labelprop_exception_handler(exc, context):
    status, message = status_and_message(exc)
    if status == 500:
        logger.exception("labelprop gateway error", exc_info=exc)
    return text(message, status)
