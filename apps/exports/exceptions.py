"""Errors of the export worker."""

from apps.core.exceptions import OrchardError


class ExportFailed(OrchardError):
    """The export could not be written or did not pass its parity check (the task fails with
    this message, and so does the export)."""

    code, status, default_message = "EXPORT_FAILED", 422, "The export failed."
