"""Errors answered outside any view, in the format of the surface that owns the path.

Django answers some requests itself: a Host header that is not one of ALLOWED_HOSTS (400), an error
raised in middleware (500) and, with DEBUG off, its own 403/404. Its pages are HTML, which no
client of Orchard's APIs reads (Label Studio shows the body, the Hanami SDK parses it as JSON).
`config.urls` points handler400/403/404/500 here: under `/api/` the main API's envelope, under a
prefix that a protocol surface registered (`register_error_answer`, from its AppConfig.ready)
that surface's own shape, elsewhere (the console, the admin) Django's page. The body-size
middleware's 413 (`apps.core.middleware`) is written by the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.core.exceptions import DisallowedHost
from django.http import HttpResponse
from django.views import defaults

from apps.core.api.exceptions import error_body

# (status, message) -> (status, content type, body): a surface may answer another status than
# Django's where its clients know only a few (the Hanami SDK: no 403).
ErrorAnswer = Callable[[int, str], tuple[int, str, bytes]]

_ANSWERS: dict[str, ErrorAnswer] = {}

MAIN_API_CODES = {
    400: "BAD_REQUEST",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    413: "PAYLOAD_TOO_LARGE",
    500: "INTERNAL_ERROR",
}


def register_error_answer(prefix: str, answer: ErrorAnswer) -> None:
    """Let the surface that serves every path under `prefix` write the errors answered outside
    its views (also for paths that match no route: its clients read its shape whatever they
    called)."""
    _ANSWERS[prefix] = answer


def json_answer(status: int, body: dict) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


def main_api_answer(status: int, message: str) -> tuple[int, str, bytes]:
    code = MAIN_API_CODES.get(status, "ERROR")
    return json_answer(status, error_body(code, message))


def surface_answer(path: str, status: int, message: str) -> tuple[int, str, bytes] | None:
    """The error answer of the surface that owns `path`, or None for the HTML pages."""
    if path == "/api" or path.startswith("/api/"):
        return main_api_answer(status, message)
    for prefix, answer in _ANSWERS.items():
        if path.startswith(prefix):
            return answer(status, message)
    return None


def _respond(request, status: int, message: str, page: Callable[[], HttpResponse]):
    answer = surface_answer(request.path_info, status, message)
    if answer is None:
        return page()
    status, content_type, body = answer
    return HttpResponse(body, status=status, content_type=content_type)


def bad_request(request, exception=None, **kwargs):
    # DisallowedHost's text names the host and the setting to add it to, which is what the
    # operator of a client calling Orchard by another name needs; other suspicious requests say
    # no more than "bad request".
    message = str(exception) if isinstance(exception, DisallowedHost) else "Bad request."
    return _respond(
        request, 400, message, lambda: defaults.bad_request(request, exception, **kwargs)
    )


def permission_denied(request, exception=None, **kwargs):
    return _respond(
        request,
        403,
        "Permission denied.",
        lambda: defaults.permission_denied(request, exception, **kwargs),
    )


def page_not_found(request, exception=None, **kwargs):
    return _respond(
        request,
        404,
        f"Not found: {request.path}",
        lambda: defaults.page_not_found(request, exception, **kwargs),
    )


def server_error(request, **kwargs):
    return _respond(
        request, 500, "Internal server error.", lambda: defaults.server_error(request, **kwargs)
    )
