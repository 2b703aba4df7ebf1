"""The training studio plan's dataset error codes (plan/09-api/02-error-handling.md)."""

from apps.core.exceptions import NotFound, ValidationFailed


class SplitNotFound(NotFound):
    code, default_message = "SPLIT_NOT_FOUND", "Split not found."


class DatasetNotImported(ValidationFailed):
    code = "DATASET_NOT_IMPORTED"
    default_message = "This project has no imported dataset."
