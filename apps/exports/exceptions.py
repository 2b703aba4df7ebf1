"""Errors of the export worker."""

from apps.core.exceptions import OrchardError


class ExportFailed(OrchardError):
    """The export could not be written or did not pass its parity check (the task fails with
    this message, and so does the export)."""

    code, status, default_message = "EXPORT_FAILED", 422, "The export failed."


class ExportFormatUnavailable(OrchardError):
    """A format the plan lists that Orchard does not produce (plan error code)."""

    code, status = "EXPORT_FORMAT_UNAVAILABLE", 422
    default_message = "This export format is not available."

    @classmethod
    def of(cls, fmt: str) -> "ExportFormatUnavailable":
        return cls(
            f"Export format '{fmt}' is not yet available (this server produces ONNX, "
            "TorchScript and safetensors).",
            details={"format": [f"'{fmt}' is not available."]},
        )
