"""Orchard's Python client (`Client`) and the `orchard` command line (`orchard_client.cli`)."""

from .client import Client
from .directio import DirectIO
from .errors import (
    Conflict,
    ConnectionFailed,
    Forbidden,
    JobFailed,
    NotFound,
    OrchardError,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Timeout,
    TrainingInProgress,
    Unauthorized,
    ValidationError,
)

__version__ = "0.1.0"
__all__ = [
    "Client",
    "Conflict",
    "ConnectionFailed",
    "DirectIO",
    "Forbidden",
    "JobFailed",
    "NotFound",
    "OrchardError",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "Timeout",
    "TrainingInProgress",
    "Unauthorized",
    "ValidationError",
]
