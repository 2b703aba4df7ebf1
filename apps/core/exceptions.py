"""Domain errors raised by services and selectors.

Every surface maps them to its own wire format: the main API to the studio error envelope, the
Hanami gateway to its status codes, consumers to close codes. Missing and "not yours" raise the same
NotFound so that nothing leaks whether another project's object exists.
"""

from typing import Any


class OrchardError(Exception):
    """Base of all domain errors; `code` and `status` follow the studio API's error table."""

    code = "INTERNAL_ERROR"
    status = 500
    default_message = "Internal error."

    def __init__(self, message: str | None = None, *, details: Any = None) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)


class NotFound(OrchardError):
    code, status, default_message = "NOT_FOUND", 404, "Not found."


class Conflict(OrchardError):
    code, status, default_message = "CONFLICT", 409, "Conflict with the current state."


class TrainingInProgress(Conflict):
    code, default_message = "TRAINING_IN_PROGRESS", "A training run is already in progress."


class ValidationFailed(OrchardError):
    """Input that cannot work; `details` maps field names to lists of messages."""

    code, status, default_message = "VALIDATION_ERROR", 422, "Invalid input."

    @classmethod
    def for_field(cls, field: str, message: str) -> "ValidationFailed":
        return cls(f"{field}: {message}", details={field: [message]})


class Forbidden(OrchardError):
    code, status, default_message = "FORBIDDEN", 403, "You do not have permission to do this."


class Unauthorized(OrchardError):
    code, status, default_message = "UNAUTHORIZED", 401, "Authentication required."


class PayloadTooLarge(OrchardError):
    code, status, default_message = "PAYLOAD_TOO_LARGE", 413, "Request body too large."


class InsufficientStorage(OrchardError):
    code, status = "INSUFFICIENT_STORAGE", 507
    default_message = "The server's data disk is full; nothing was stored. Try again later."


DISK_FULL_ERRNOS = frozenset({28, 122})  # ENOSPC, EDQUOT


SQLITE_FULL = 13  # "database or disk is full": the embedded database lives on the data disk


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` is a write that failed for lack of space (a full disk or a quota), also when
    it was SQLite's write (Django re-raises it as its OperationalError, the cause kept)."""
    for error in (exc, exc.__cause__):
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        if getattr(error, "sqlite_errorcode", None) == SQLITE_FULL:
            return True
    return False
