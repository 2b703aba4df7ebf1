"""Typed errors: each carries the server envelope's `code`, `message`, `details` and HTTP status.

The main API answers `{"status": "error", "error": {"code", "message", "details"?}}`; the class
raised is chosen by the code (falling back to the HTTP status), so callers can write
`except NotFound:` or `except OrchardError as e: e.code`."""

from __future__ import annotations

from typing import Any


class OrchardError(Exception):
    """Any error answered by Orchard (or met while talking to it)."""

    code = "ERROR"
    exit_code = 1  # the CLI's exit status for this error

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: Any = None,
    ):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.status = status
        self.details = details

    def __str__(self) -> str:
        prefix = f"{self.code}" + (f" ({self.status})" if self.status else "")
        return f"{prefix}: {self.message}"

    def to_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.status is not None:
            out["status"] = self.status
        if self.details is not None:
            out["details"] = self.details
        return out


class ConnectionFailed(OrchardError):
    """The server could not be reached (or the connection broke and retries were used up)."""

    code = "CONNECTION_FAILED"
    exit_code = 7


class Unauthorized(OrchardError):
    code = "UNAUTHORIZED"
    exit_code = 4


class Forbidden(OrchardError):
    code = "FORBIDDEN"
    exit_code = 4


class NotFound(OrchardError):
    code = "NOT_FOUND"
    exit_code = 3


class Conflict(OrchardError):
    code = "CONFLICT"
    exit_code = 5


class TrainingInProgress(Conflict):
    code = "TRAINING_IN_PROGRESS"


class ValidationError(OrchardError):
    code = "VALIDATION_ERROR"
    exit_code = 2


class PayloadTooLarge(OrchardError):
    code = "PAYLOAD_TOO_LARGE"
    exit_code = 2


class RateLimited(OrchardError):
    code = "RATE_LIMITED"
    exit_code = 6


class ServerError(OrchardError):
    code = "INTERNAL_ERROR"
    exit_code = 1


class JobFailed(OrchardError):
    """A run, task, evaluation or export ended failed (or stopped): `message` is the server's
    reason, `status` the final state, `job` the last known object."""

    code = "JOB_FAILED"
    exit_code = 8

    def __init__(self, message: str, *, state: str, job: dict | None = None):
        super().__init__(message, code=self.code)
        self.state = state
        self.job = job or {}

    def __str__(self) -> str:
        return f"{self.state}: {self.message}"


class Timeout(OrchardError):
    """A wait() ran past its timeout."""

    code = "TIMEOUT"
    exit_code = 9


_BY_CODE: dict[str, type[OrchardError]] = {
    cls.code: cls
    for cls in (
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        TrainingInProgress,
        ValidationError,
        PayloadTooLarge,
        RateLimited,
        ServerError,
    )
}
_BY_STATUS: dict[int, type[OrchardError]] = {
    400: ValidationError,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
}


def error_from_response(status: int, body: Any, fallback_text: str = "") -> OrchardError:
    """The typed error for an answer with this status and (decoded JSON) body."""
    code, message, details = None, None, None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code, message, details = err.get("code"), err.get("message"), err.get("details")
        elif isinstance(err, str):  # protocol surfaces: {"error": "..."}
            message = err
        elif isinstance(body.get("detail"), str):
            message = body["detail"]
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else OrchardError
    text = message or (fallback_text or "").strip()[:500] or f"HTTP {status}"
    return cls(str(text), code=code or cls.code, status=status, details=details)
