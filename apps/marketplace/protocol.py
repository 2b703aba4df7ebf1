"""The orchestrator's wire format: documents as the protocol shows them, and strict parsing of
request bodies (unknown fields, wrong types and malformed uuids are refused with a message).

Documents carry the protocol's field names. Timestamps are Unix seconds (as upstream wrote
them); a value that is not known yet is `null` (the Go worker decodes `null` as the zero uuid,
which is how it tests "no model_start").
"""

from __future__ import annotations

import math
import uuid as uuidlib
from typing import Any

from apps.core.exceptions import ValidationFailed
from apps.marketplace.models import Algo, Data, Learnuplet, Preduplet, Problem

NAME_MAX = 200
UUID_LIST_MAX = 100_000


def _ts(value) -> int | None:
    return int(value.timestamp()) if value is not None else None


def _str(value) -> str | None:
    return str(value) if value is not None else None


def problem_document(problem: Problem) -> dict[str, Any]:
    return {
        "uuid": str(problem.uuid),
        "workflow": str(problem.workflow),
        "test_dataset": list(problem.test_dataset),
        "size_train_dataset": problem.size_train_dataset,
        "timestamp_upload": _ts(problem.created_at),
    }


def algo_document(algo: Algo) -> dict[str, Any]:
    return {
        "uuid": str(algo.uuid),
        "name": algo.name,
        "problem": str(algo.problem.uuid),
        "timestamp_upload": _ts(algo.created_at),
    }


def data_document(data: Data) -> dict[str, Any]:
    return {
        "uuid": str(data.uuid),
        "problems": [str(p.uuid) for p in data.problems.all()],
        "timestamp_upload": _ts(data.created_at),
    }


def learnuplet_document(uplet: Learnuplet) -> dict[str, Any]:
    return {
        "uuid": str(uplet.uuid),
        "problem": str(uplet.problem.uuid),
        "workflow": str(uplet.workflow),
        "algo": str(uplet.algo.uuid),
        "model_start": _str(uplet.model_start),
        "model_end": str(uplet.model_end),
        "train_data": list(uplet.train_data),
        "test_data": list(uplet.test_data),
        "worker": _str(uplet.worker),
        "perf": uplet.perf,
        "train_perf": uplet.train_perf,
        "test_perf": uplet.test_perf,
        "status": uplet.status,
        "rank": uplet.rank,
        "timestamp_creation": _ts(uplet.created_at),
        "timestamp_done": _ts(uplet.timestamp_done),
    }


def preduplet_document(uplet: Preduplet) -> dict[str, Any]:
    return {
        "uuid": str(uplet.uuid),
        "problem": str(uplet.problem.uuid),
        "workflow": str(uplet.workflow),
        "model": str(uplet.model),
        # One uuid or a list, as it was requested (see Preduplet).
        "data": uplet.data if isinstance(uplet.data, str) else list(uplet.data),
        "worker": _str(uplet.worker),
        "status": uplet.status,
        "prediction_storage_uuid": _str(uplet.prediction_storage_uuid),
        "timestamp_request": _ts(uplet.created_at),
        "timestamp_done": _ts(uplet.timestamp_done),
    }


DOCUMENTS = {
    "problem": problem_document,
    "algo": algo_document,
    "data": data_document,
    "learnuplet": learnuplet_document,
    "preduplet": preduplet_document,
}


# --- request bodies ------------------------------------------------------------------------------


def _missing(value) -> bool:
    return value is None


class Body:
    """A JSON object body with a fixed set of fields; unknown fields are refused up front."""

    def __init__(self, data: Any, fields: set[str]) -> None:
        if not isinstance(data, dict):
            raise ValidationFailed("The body must be a JSON object.")
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValidationFailed(
                f"unknown field(s): {', '.join(unknown)}",
                details={name: ["Unknown field."] for name in unknown},
            )
        self.data = data

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def uuid(self, name: str, *, required: bool = True) -> str | None:
        value = self.data.get(name)
        if _missing(value):
            if required:
                raise ValidationFailed.for_field(name, "is required.")
            return None
        return as_uuid(value, name)

    def uuid_or_uuids(self, name: str) -> str | list[str]:
        """One uuid (kept a string) or a non-empty list of uuids."""
        value = self.data.get(name)
        if isinstance(value, str):
            return as_uuid(value, name)
        if value is not None and not isinstance(value, list):
            raise ValidationFailed.for_field(name, "must be a uuid or a list of uuids.")
        return self.uuids(name, empty=False)

    def uuids(self, name: str, *, single: bool = False, empty: bool = True) -> list[str]:
        """A list of uuids (or one uuid when `single`), without duplicates."""
        value = self.data.get(name)
        if _missing(value):
            raise ValidationFailed.for_field(name, "is required.")
        if single and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            what = "a uuid or a list of uuids" if single else "a list of uuids"
            raise ValidationFailed.for_field(name, f"must be {what}.")
        if not value and not empty:
            raise ValidationFailed.for_field(name, "must not be empty.")
        if len(value) > UUID_LIST_MAX:
            raise ValidationFailed.for_field(name, f"holds more than {UUID_LIST_MAX} uuids.")
        result = [as_uuid(item, name) for item in value]
        if len(set(result)) != len(result):
            raise ValidationFailed.for_field(name, "lists the same uuid twice.")
        return result

    def positive_int(self, name: str) -> int:
        value = self.data.get(name)
        if _missing(value):
            raise ValidationFailed.for_field(name, "is required.")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValidationFailed.for_field(name, "must be a positive integer.")
        if value > 2**31 - 1:
            raise ValidationFailed.for_field(name, "is too large.")
        return value

    def string(self, name: str, *, max_length: int = NAME_MAX) -> str:
        value = self.data.get(name)
        if _missing(value):
            raise ValidationFailed.for_field(name, "is required.")
        if not isinstance(value, str) or not value.strip():
            raise ValidationFailed.for_field(name, "must be a non-empty string.")
        if len(value) > max_length:
            raise ValidationFailed.for_field(name, f"must be at most {max_length} characters.")
        return value

    def choice(self, name: str, choices: tuple[str, ...], *, required: bool = True) -> str | None:
        value = self.data.get(name)
        if _missing(value):
            if required:
                raise ValidationFailed.for_field(name, "is required.")
            return None
        if not isinstance(value, str) or value not in choices:
            raise ValidationFailed.for_field(name, f"must be one of {', '.join(choices)}.")
        return value

    def number(self, name: str, *, required: bool = True) -> float | None:
        value = self.data.get(name)
        if _missing(value):
            if required:
                raise ValidationFailed.for_field(name, "is required.")
            return None
        return as_number(value, name)

    def perfs(self, name: str) -> list[float] | dict[str, float] | None:
        """Per-file performances: a list of numbers (the documented form) or a map
        {data uuid: number} (what the Go compute worker sends); null when absent."""
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, list):
            return [as_number(v, name) for v in value]
        if isinstance(value, dict):
            return {str(k): as_number(v, f"{name}.{k}") for k, v in value.items()}
        raise ValidationFailed.for_field(
            name, "must be a list of numbers or a map of data uuid to number."
        )


def as_uuid(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValidationFailed.for_field(name, "must be a uuid string.")
    try:
        return str(uuidlib.UUID(value))
    except ValueError:
        raise ValidationFailed.for_field(name, f"{value[:64]!r} is not a valid uuid.") from None


def as_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed.for_field(name, "must be a number.")
    try:
        value = float(value)
    except OverflowError:
        raise ValidationFailed.for_field(name, "is too large.") from None
    if not math.isfinite(value):
        raise ValidationFailed.for_field(name, "must be a finite number.")
    return value
