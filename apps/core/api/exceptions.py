"""The main API's exception handler: every error becomes the studio error envelope.

`{"status": "error", "error": {"code": "NOT_FOUND", "message": "...", "details": ...}}`
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from apps.core.api.parsers import TOO_DEEP
from apps.core.exceptions import InsufficientStorage, OrchardError, disk_full

logger = logging.getLogger(__name__)

_DRF_CODES: list[tuple[type[Exception], str, int]] = [
    (drf.ValidationError, "VALIDATION_ERROR", 422),
    (drf.ParseError, "VALIDATION_ERROR", 422),
    (InvalidToken, "UNAUTHORIZED", 401),
    (drf.NotAuthenticated, "UNAUTHORIZED", 401),
    (drf.AuthenticationFailed, "UNAUTHORIZED", 401),
    (drf.PermissionDenied, "FORBIDDEN", 403),
    (drf.NotFound, "NOT_FOUND", 404),
    (drf.MethodNotAllowed, "METHOD_NOT_ALLOWED", 405),
    (drf.NotAcceptable, "NOT_ACCEPTABLE", 406),
    (drf.UnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE", 415),
    (drf.Throttled, "RATE_LIMITED", 429),
]


def error_body(code: str, message: str, details=None) -> dict:
    error = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"status": "error", "error": error}


def _message_of(detail) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            return (
                f"{field}: {_message_of(value)}"
                if field != "non_field_errors"
                else _message_of(value)
            )
    if isinstance(detail, list) and detail:
        return _message_of(detail[0])
    return str(detail)


def envelope_exception_handler(exc, context):
    """Map domain, Django and DRF exceptions to the envelope with the studio's codes."""
    headers = {}
    if disk_full(exc):
        logger.error("Disk full in %s: %s", context.get("view").__class__.__name__, exc)
        exc = InsufficientStorage()
    if isinstance(exc, OrchardError):
        return Response(
            error_body(exc.code, exc.message, exc.details), status=exc.status, exception=True
        )
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = drf.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, TokenError):
        exc = InvalidToken(str(exc))
    elif isinstance(exc, RecursionError):
        # A body nested deeper than the parser (or a serializer walking it) can recurse; the
        # settings' DRF JSONParser raises it instead of a ParseError.
        exc = drf.ParseError(TOO_DEEP)
    elif isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("PAYLOAD_TOO_LARGE", "Request body too large."), status=413, exception=True
        )

    if isinstance(exc, drf.APIException):
        code, status = next(
            ((code, status) for cls, code, status in _DRF_CODES if isinstance(exc, cls)),
            ("ERROR", exc.status_code),
        )
        if isinstance(exc, drf.ValidationError):
            details = exc.detail
            message = _message_of(exc.detail)
        elif isinstance(exc, InvalidToken):
            details, message = None, "Token is invalid or expired."
        else:
            details, message = None, _message_of(exc.detail)
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        return Response(
            error_body(code, message, details), status=status, headers=headers, exception=True
        )

    logger.exception("Unhandled error in %s", context.get("view").__class__.__name__)
    return Response(
        error_body("INTERNAL_ERROR", "Internal server error."), status=500, exception=True
    )
