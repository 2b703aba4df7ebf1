"""The gateway's audit log (every request) and error log (server errors)."""

from __future__ import annotations

import logging

from django.db import transaction

from apps.hanami.models import AuditEntry, ErrorEntry

logger = logging.getLogger(__name__)
PAGE_SIZE = 100


def _user(request):
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def audit_record(request, status: int) -> None:
    """One row per gateway request; a failure to record never fails the request."""
    if transaction.get_connection().needs_rollback:
        return  # the request's own transaction failed; its 500 is in the error log
    try:
        with transaction.atomic():
            AuditEntry.objects.create(
                user=_user(request),
                endpoint=request.path[:200],
                request_type=request.method[:8],
                status=status,
            )
    except Exception:
        logger.warning("could not write the audit log", exc_info=True)


def error_record(request, context: str, values: str = "") -> None:
    if transaction.get_connection().needs_rollback:
        logger.warning("error log skipped (broken transaction): %s %s", context, values)
        return
    try:
        ErrorEntry.objects.create(
            user=_user(request) if request is not None else None,
            context=context[:200],
            values=values[:10_000],
        )
    except Exception:
        logger.warning("could not write the error log", exc_info=True)
