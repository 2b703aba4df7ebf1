"""Wire format of the Label Studio ML backend surface: plain JSON answers (no studio envelope),
JSON bodies whatever the Content-Type, and errors as label-studio-ml-backend writes them:
`{"status": <HTTP status>, "detail": "<message>"}`, never an HTML page.

| error                                                         | status |
|---------------------------------------------------------------|--------|
| malformed JSON, ValidationFailed (bad input, label config, /setup's failed check) | 400 |
| Unauthorized (per-backend Basic credentials), with `WWW-Authenticate: Basic` | 401 |
| NotFound (unknown backend id, unknown route method -> 405)    | 404    |
| Conflict (training in progress elsewhere, unbound model, an experiment without a completed run, training an experiment-bound backend) | 409 |
| PayloadTooLarge (request body or fetched task data)           | 413    |
| Throttled (too many failed credential checks: AUTH_FAILURE_RATE), with `Retry-After` | 429 |
| FetchFailed (an allowed URL did not answer; /predict answers each task's own instead) | 502 |
| anything else (logged, message hidden)                        | 500    |
"""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response

from apps.core.errors import json_answer
from apps.core.exceptions import OrchardError, Unauthorized, ValidationFailed

logger = logging.getLogger(__name__)

BASIC_CHALLENGE = 'Basic realm="Orchard ML backend", charset="UTF-8"'


def error_body(status: int, detail: str) -> dict:
    return {"status": status, "detail": detail}


def error_answer(status: int, message: str) -> tuple[int, str, bytes]:
    """An error answered outside the views under `/ml/` (a body over its limit, a Host not
    served, an error in middleware: `apps.core.errors`; registered by MlbackendConfig.ready)."""
    return json_answer(status, error_body(status, message))


def status_and_detail(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, OrchardError):
        if isinstance(exc, ValidationFailed):
            return 400, exc.message
        if exc.status < 500 or exc.status == 502:
            return exc.status, exc.message
        return 500, "Internal error."
    if isinstance(exc, drf.ParseError):
        return 400, str(exc.detail)
    if isinstance(exc, RequestDataTooBig):
        return 413, "Request body too large."
    if isinstance(exc, Http404):
        return 404, "Not found."
    if isinstance(exc, drf.APIException) and exc.status_code < 500:
        return exc.status_code, str(exc.detail)
    return 500, "Internal error."


def labelstudio_exception_handler(exc, context):
    status, detail = status_and_detail(exc)
    headers = {"WWW-Authenticate": BASIC_CHALLENGE} if isinstance(exc, Unauthorized) else {}
    if isinstance(exc, drf.Throttled) and exc.wait:
        headers["Retry-After"] = str(int(exc.wait))
    if status == 500:
        logger.exception("Label Studio gateway error", exc_info=exc)
    return Response(error_body(status, detail), status=status, headers=headers, exception=True)
