"""Fields of the gateway's input: each fails with the protocol's own message (the SDK shows it)."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from apps.clusters import selectors as clusters_selectors
from apps.core.tenancy import ProjectAccess
from apps.datasets import selectors as datasets_selectors
from apps.hanami import selectors

ID_RE = re.compile(r"[a-zA-Z][a-zA-Z_0-9]*")


class Value(serializers.Field):
    """A required, non-empty value of one JSON type (a string unless `kind` says otherwise)."""

    default_error_messages = {"required": "is required.", "null": "is required."}

    def __init__(self, kind: type = str, **kwargs: Any) -> None:
        self.kind = kind
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if data == "":
            self.fail("required")
        if self.kind is int:
            if isinstance(data, bool) or not isinstance(data, int):
                raise ValidationError("must be an integer.")
        elif not isinstance(data, self.kind):
            raise ValidationError(f"must be a {self.kind.__name__}.")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class Choice(Value):
    """A required string among `choices`; `message` is the protocol's answer for another one."""

    def __init__(self, choices: tuple[str, ...], message: str, **kwargs: Any) -> None:
        self.choices, self.message = choices, message
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        data = super().to_internal_value(data)
        if data not in self.choices:
            raise ValidationError(self.message)
        return data


class Size(Value):
    """A byte count announced before an upload: a positive integer."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(int, **kwargs)

    def to_internal_value(self, data: Any) -> int:
        data = super().to_internal_value(data)
        if data < 1:
            raise ValidationError("must be positive.")
        return data


class Text(Value):
    """A required string of at most `max_length` characters (a name, a password): names are
    stripped (only spaces is missing), passwords kept as sent (`strip=False`)."""

    def __init__(self, max_length: int, *, strip: bool = True, **kwargs: Any) -> None:
        self.max_length, self.strip = max_length, strip
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        data = super().to_internal_value(data)
        if self.strip:
            data = data.strip()
            if not data:
                self.fail("required")
        if len(data) > self.max_length:
            raise ValidationError(f"must be at most {self.max_length} characters.")
        return data


class HanamiId(Value):
    """A user or project id: `[a-zA-Z][a-zA-Z_0-9]*`, at most `max_length` characters."""

    def __init__(self, max_length: int, **kwargs: Any) -> None:
        self.max_length = max_length
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        data = super().to_internal_value(data)
        if not ID_RE.fullmatch(data):
            raise ValidationError("must match [a-zA-Z][a-zA-Z_0-9]*.")
        if len(data) > self.max_length:
            raise ValidationError(f"must be at most {self.max_length} characters.")
        return data


class UUIDText(Value):
    """A resource id: a UUID in a string (anything but a non-empty string is "required")."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or not data:
            self.fail("required")
        try:
            return str(uuid.UUID(data))
        except ValueError:
            raise ValidationError("must be a UUID.") from None


class Scoped(UUIDText):
    """A resource of the token's project by its uuid, fetched through the owning app's selector
    (`lookup(access, uuid, for_edit)`: NotFound for a missing or foreign one); with `edit`, one
    the caller may change (Forbidden otherwise)."""

    def __init__(
        self, lookup: Callable[[ProjectAccess, str, bool], Any], *, edit: bool = False
    ) -> None:
        self.lookup, self.edit = lookup, edit
        super().__init__()

    def to_internal_value(self, data: Any) -> Any:
        return self.lookup(self.context["access"], super().to_internal_value(data), self.edit)


# The lookups of `Scoped` fields: the owning apps' selectors, within the caller's access.


def dataset_lookup(access: ProjectAccess, pk: str, for_edit: bool = False):
    return datasets_selectors.dataset_get(access=access, dataset_id=pk, for_edit=for_edit)


def cluster_lookup(access: ProjectAccess, pk: str, for_edit: bool = False):
    return clusters_selectors.cluster_get(access=access, cluster_id=pk, for_edit=for_edit)


def checkpoint_lookup(access: ProjectAccess, pk: str, for_edit: bool = False):
    return clusters_selectors.checkpoint_get(access=access, checkpoint_id=pk, for_edit=for_edit)


def result_lookup(access: ProjectAccess, pk: str, for_edit: bool = False):
    return selectors.request_result_get(access=access, result_id=pk, for_edit=for_edit)


class Flag(serializers.Field):
    """An optional JSON boolean, false when absent."""

    default_error_messages = {"null": "must be true or false."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, default=False, **kwargs)

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            raise ValidationError("must be true or false.")
        return data

    def to_representation(self, value: Any) -> bool:
        return value


class PageNumber(serializers.Field):
    """A log page: a query string holding an integer from 0."""

    def to_internal_value(self, data: Any) -> int:
        try:
            page = int(data)
        except (TypeError, ValueError):
            raise ValidationError("must be an integer.") from None
        if page < 0:
            raise ValidationError("must be 0 or more.")
        return page

    def to_representation(self, value: Any) -> int:
        return value


class Base64Template(Value):
    """A cluster template: the base64 of its UTF-8 text."""

    def to_internal_value(self, data: Any) -> str:
        data = super().to_internal_value(data)
        try:
            return base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise ValidationError("must be the base64 of the template text.") from None


class Role(serializers.Field):
    """A membership role; absent, null or empty means "member" (the services check the name)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, allow_null=True, default="member", **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not data:
            return "member"
        if not isinstance(data, str):
            raise ValidationError("must be a string.")
        return data

    def to_representation(self, value: Any) -> str:
        return value
