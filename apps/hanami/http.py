"""Wire format of the Hanami REST surface: JSON whatever the Content-Type, plain JSON answers, and
errors as `{"error": message}` with only the status codes the SDK understands.

The SDK (`hanami_sdk`) maps 400, 401, 404, 409 and 500 to its exceptions and silently returns None
for any other non-200 status, so every error here is folded into those five:

| error                                                    | status |
|----------------------------------------------------------|--------|
| ValidationFailed, ParseError, DRF ValidationError, PayloadTooLarge, Django ValidationError | 400 |
| Unauthorized, NotAuthenticated, AuthenticationFailed, InvalidToken, **Forbidden / PermissionDenied**, Throttled | 401 |
| NotFound, Http404, MethodNotAllowed (an unknown endpoint+method, like upstream) | 404 |
| Conflict                                                 | 409 |
| anything else (logged, message hidden)                   | 500 |

Forbidden becomes 401 because upstream Hanami answers its policy denials ("only admins may ...",
a read-only role) with 401 Unauthorized, and the SDK raises UnauthorizedException with the message.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from apps.core.api.protocol import error_message
from apps.core.errors import json_answer
from apps.core.exceptions import (
    Conflict,
    Forbidden,
    NotFound,
    OrchardError,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
)

logger = logging.getLogger(__name__)


# The shared services name the main API's fields in their messages; the SDK sends these.
SDK_FIELDS = {
    "cluster_id": "cluster_uuid",
    "dataset_id": "dataset_uuid",
    "checkpoint_id": "checkpoint_uuid",
}


def sdk_field_names(message: str) -> str:
    """`message` with a main-API field name that starts it renamed to the SDK's."""
    field, colon, rest = message.partition(": ")
    return f"{SDK_FIELDS[field]}{colon}{rest}" if colon and field in SDK_FIELDS else message


def status_and_message(exc: Exception) -> tuple[int, str]:
    """The (status, message) of an exception on the Hanami surface."""
    if isinstance(exc, OrchardError):
        if isinstance(exc, ValidationFailed | PayloadTooLarge):
            return 400, sdk_field_names(exc.message)
        if isinstance(exc, Unauthorized | Forbidden):
            return 401, exc.message
        if isinstance(exc, NotFound):
            return 404, exc.message
        if isinstance(exc, Conflict):
            return 409, exc.message
        return 500, "Internal error."
    if isinstance(exc, drf.ValidationError | drf.ParseError | DjangoValidationError):
        detail = getattr(exc, "detail", None) or getattr(exc, "messages", None) or str(exc)
        return 400, error_message(detail)
    if isinstance(exc, InvalidToken | TokenError):
        return 401, "Token is invalid or expired."
    if isinstance(
        exc,
        drf.NotAuthenticated
        | drf.AuthenticationFailed
        | drf.PermissionDenied
        | DjangoPermissionDenied,
    ):
        return 401, error_message(getattr(exc, "detail", None) or "Permission denied.")
    if isinstance(exc, drf.Throttled):
        return 401, error_message(exc.detail)
    if isinstance(exc, drf.NotFound | Http404):
        return 404, error_message(getattr(exc, "detail", None) or "Not found.")
    if isinstance(exc, drf.MethodNotAllowed):
        return 404, error_message(exc.detail)
    if isinstance(exc, drf.APIException) and exc.status_code < 500:
        return 400, error_message(exc.detail)
    return 500, "Internal error."


def error_answer(status: int, message: str) -> tuple[int, str, bytes]:
    """An error answered outside the views under `/control/` (a Host not served, an error in
    middleware, a body over its limit: `apps.core.errors`; registered by HanamiConfig.ready):
    `{"error": message}` with a status the SDK knows (400, 401, 404, 409, 500: the SDK reads
    any other as no answer at all), mapped as the views map theirs."""
    return json_answer(SDK_STATUS.get(status, status), {"error": message})


# What the views' handler (status_and_message) answers for the statuses the SDK does not know.
SDK_STATUS = {403: 401, 405: 404, 413: 400, 414: 400, 431: 400}


def hanami_exception_handler(exc, context):
    status, message = status_and_message(exc)
    if status == 500:
        from apps.hanami.logs import error_record

        logger.exception("Hanami gateway error", exc_info=exc)
        request = context.get("request")
        error_record(request, getattr(request, "path", ""), f"{type(exc).__name__}: {exc}")
    return Response({"error": message}, status=status)
