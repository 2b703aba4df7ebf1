"""The training studio plan's error codes (plan/09-api/02-error-handling.md): specific codes with
the generic ones' HTTP statuses, so a client that only knows NOT_FOUND / VALIDATION_ERROR still
reads the status right."""

from apps.core.exceptions import NotFound, ValidationFailed


class ExperimentNotFound(NotFound):
    code, default_message = "EXPERIMENT_NOT_FOUND", "Experiment not found."


class RunNotFound(NotFound):
    code, default_message = "RUN_NOT_FOUND", "Run not found."


class CheckpointNotFound(NotFound):
    code, default_message = "CHECKPOINT_NOT_FOUND", "Checkpoint not found."


class GpuNotAvailable(ValidationFailed):
    code, default_message = "GPU_NOT_AVAILABLE", "No GPU is available."
