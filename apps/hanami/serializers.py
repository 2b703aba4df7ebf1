"""Input of the gateway's routes: bodies and query strings, validated like upstream Hanami.

Hanami answers one error at a time: the first invalid field in the order the SDK sends them, as
`{"error": "<field>: <message>"}` (status 400). `HanamiSerializer` stops at that first error and
raises it as ValidationFailed, which every surface maps to its own format; the messages are the
protocol's bytes, so they are spelled out here rather than taken from DRF.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.fields import SkipField

from apps.core.api.protocol import error_message
from apps.core.exceptions import NotFound, ValidationFailed
from apps.datasets import selectors as datasets_selectors
from apps.datasets.models import Dataset
from apps.hanami.access import require_global_admin
from apps.hanami.fields import (
    Base64Template,
    Choice,
    Flag,
    HanamiId,
    PageNumber,
    Role,
    Scoped,
    Size,
    Text,
    UUIDText,
    Value,
    checkpoint_lookup,
    cluster_lookup,
    dataset_lookup,
    result_lookup,
)

USER_ID_MAX = 150
PROJECT_ID_MAX = 64
# The main API's limits on the same columns (its serializers and the models' max_length).
USER_NAME_MAX = 150
PASSWORD_MAX = 128
NAME_MAX = 200
NOT_AN_OBJECT = "The body must be a JSON object."


def json_object(data: Any) -> Mapping:
    """The body as a mapping, or the protocol's 400."""
    if not isinstance(data, Mapping):
        raise ValidationFailed(NOT_AN_OBJECT)
    return data


class HanamiSerializer(serializers.Serializer):
    """Validates its fields in declaration order and raises the first error (see the module).

    A field's `validate_<name>` hook runs right after it, and may read the fields before it in
    `self.earlier`. Lookups (`Scoped`) happen in the same order, so an unknown id answers 404
    before a later field is checked, as the gateway always answered.
    """

    def run_validation(self, data=serializers.empty):
        data = json_object(data)
        values: dict[str, Any] = {}
        self.earlier = values  # what the hooks of later fields may look at
        for field in self._writable_fields:
            hook = getattr(self, f"validate_{field.field_name}", None)
            try:
                value = field.run_validation(field.get_value(data))
                if hook is not None:
                    value = hook(value)
            except SkipField:
                continue
            except ValidationError as exc:
                message = error_message(exc.detail)
                raise ValidationFailed.for_field(field.field_name, message) from None
            values[field.source] = value
        return values


def validated(serializer_class: type[HanamiSerializer], data: Any, **context: Any) -> dict:
    """The validated input of one route (query strings too: pass `request.query_params`).
    `access` in the context is the caller's ProjectAccess, for `Scoped` fields."""
    serializer = serializer_class(data=data, context=context)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


# -- tokens, users, projects ------------------------------------------------------------------


class LoginInput(HanamiSerializer):
    id = Value()
    password = Value()


class ProjectSwitchInput(HanamiSerializer):
    project_id = Value()


class UserCreateInput(HanamiSerializer):
    id = HanamiId(USER_ID_MAX)
    name = Text(USER_NAME_MAX)
    password = Text(PASSWORD_MAX, strip=False)
    is_admin = Flag()


class UserQuery(HanamiSerializer):
    id = HanamiId(USER_ID_MAX)


class MembershipInput(HanamiSerializer):
    """The user, project and role of a new membership (the view looks both up, then reads
    `MembershipFlagInput`: upstream's order)."""

    id = HanamiId(USER_ID_MAX)
    project_id = HanamiId(PROJECT_ID_MAX)
    role = Role()

    def validate_role(self, value: str | None) -> str:
        return value or "member"


class MembershipFlagInput(HanamiSerializer):
    is_project_admin = Flag()


class MembershipQuery(HanamiSerializer):
    id = HanamiId(USER_ID_MAX)
    project_id = HanamiId(PROJECT_ID_MAX)


class ProjectCreateInput(HanamiSerializer):
    id = HanamiId(PROJECT_ID_MAX)
    name = Text(NAME_MAX)


class ProjectQuery(HanamiSerializer):
    id = HanamiId(PROJECT_ID_MAX)


class LogQuery(HanamiSerializer):
    """`user_id` (the view passes the caller's own when absent) and `page` (from 0); the caller
    is the context's `user`."""

    user_id = HanamiId(USER_ID_MAX)
    page = PageNumber()

    def validate_user_id(self, value: str) -> str:
        caller = self.context["user"]
        if value != caller.username:
            require_global_admin(caller)  # a denial answers before a bad page does
        return value


# -- datasets ---------------------------------------------------------------------------------


class UuidQuery(HanamiSerializer):
    uuid = UUIDText()


class MnistUploadInput(HanamiSerializer):
    name = Text(NAME_MAX)
    input_data_size = Size()
    label_data_size = Size()


class CsvUploadInput(HanamiSerializer):
    name = Text(NAME_MAX)
    input_data_size = Size()


class _FinishInput(HanamiSerializer):
    """The dataset to finalize (of this kind, changeable by the caller) and its uploads."""

    kind: ClassVar[str]
    uuid = Scoped(dataset_lookup, edit=True)

    def validate_uuid(self, dataset: Dataset) -> Dataset:
        if dataset.kind != self.kind:
            raise ValidationError(f"is not a {self.kind} dataset.")
        return dataset

    def upload(self, field: str, role: str, upload_id: str) -> str:
        """`upload_id` if it is the dataset's upload of that role, else NotFound."""
        roles = datasets_selectors.dataset_upload_roles(self.earlier["uuid"])
        if roles.get(upload_id) != role:
            raise NotFound(f"{field}: upload not found for this dataset.")
        return upload_id


class MnistFinishInput(_FinishInput):
    kind = Dataset.Kind.MNIST
    uuid_input_file = UUIDText()
    uuid_label_file = UUIDText()

    def validate_uuid_input_file(self, value: str) -> str:
        return self.upload("uuid_input_file", "images", value)

    def validate_uuid_label_file(self, value: str) -> str:
        return self.upload("uuid_label_file", "labels", value)


class CsvFinishInput(_FinishInput):
    kind = Dataset.Kind.CSV
    uuid_input_file = UUIDText()

    def validate_uuid_input_file(self, value: str) -> str:
        return self.upload("uuid_input_file", "file", value)


class ResultCheckInput(HanamiSerializer):
    """The SDK sends it as a body (POST) or a query string (GET)."""

    result_uuid = Scoped(result_lookup)
    dataset_uuid = Scoped(dataset_lookup)


# -- clusters, checkpoints, tasks -------------------------------------------------------------


class ClusterCreateInput(HanamiSerializer):
    name = Text(NAME_MAX)
    template = Base64Template()


class CheckpointSaveInput(HanamiSerializer):
    name = Text(NAME_MAX)
    # Saving a checkpoint changes the cluster's history: the same rule as the main API.
    cluster_uuid = Scoped(cluster_lookup, edit=True)


class CheckpointLoadInput(HanamiSerializer):
    checkpoint_uuid = Scoped(checkpoint_lookup)
    cluster_uuid = Scoped(cluster_lookup, edit=True)


class ModeInput(HanamiSerializer):
    new_state = Choice(("DIRECT", "TASK"), "must be DIRECT or TASK.")
    uuid = Scoped(cluster_lookup, edit=True)


class HostSwitchInput(HanamiSerializer):
    cluster_uuid = Scoped(cluster_lookup, edit=True)
    host_uuid = Value()


class TaskCreateInput(HanamiSerializer):
    name = Text(NAME_MAX)
    type = Choice(("train", "request"), "must be train or request.")
    cluster_uuid = Scoped(cluster_lookup)
    dataset_uuid = Scoped(dataset_lookup)


class TaskQuery(HanamiSerializer):
    uuid = UUIDText()
    cluster_uuid = UUIDText(required=False)


class ClusterQuery(HanamiSerializer):
    cluster_uuid = Scoped(cluster_lookup)
