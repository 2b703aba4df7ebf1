"""Serializer bases: unknown fields are refused, and related fields are limited to the project."""

from django.http import QueryDict
from rest_framework import serializers

_JSON_TYPES = (
    # (field class, accepted Python types of the decoded JSON value); bool is no number here
    (serializers.BooleanField, (bool,)),
    (serializers.IntegerField, (int,)),
    (serializers.FloatField, (int, float)),
    (serializers.CharField, (str,)),
)


def _json_type_error(field, value) -> str | None:
    """Why `value` (decoded from JSON) does not have the JSON type that `field` documents (the
    field's own "invalid" message), or None."""
    if value is None:
        return None  # null is the field's own business (allow_null)
    for field_class, types in _JSON_TYPES:
        if isinstance(field, field_class):
            wrong_bool = isinstance(value, bool) and bool not in types
            if wrong_bool or not isinstance(value, types):
                return field.error_messages.get("invalid", "Invalid type.")
            return None
    return None


class StrictSerializerMixin:
    """Refuse request fields the serializer does not declare (a typo is an error, not a no-op),
    and, in JSON bodies, values of another JSON type than the field's: DRF would turn 0 into
    "0" for a string, "5" into 5 for an integer and "0" into False for a boolean, which the API
    schema does not allow. Form-encoded bodies (a QueryDict: every value is a string) are left to
    DRF's conversions."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
            if not isinstance(data, QueryDict):
                errors = {}
                for name, value in data.items():
                    message = _json_type_error(self.fields[name], value)
                    if message:
                        errors[name] = [message]
                if errors:
                    raise serializers.ValidationError(errors)
        elif not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        return super().to_internal_value(data)


class StrictSerializer(StrictSerializerMixin, serializers.Serializer):
    pass


class StrictModelSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    pass


class ProjectRelatedField(serializers.SlugRelatedField):
    """A reference to another tenant-owned object, resolved only among those the caller sees.

    The queryset comes from the view's `ProjectAccess`, so an id of another project is "not found".
    """

    def __init__(self, model=None, slug_field="pk", **kwargs):
        self.model = model
        kwargs.setdefault("queryset", model.objects.all() if model is not None else None)
        kwargs.setdefault(
            "error_messages",
            {"does_not_exist": "Not found in this project.", "invalid": "Invalid id."},
        )
        super().__init__(slug_field=slug_field, **kwargs)

    def get_queryset(self):
        access = self.context.get("access")
        if access is None:
            raise RuntimeError("ProjectRelatedField needs the view's access in its context.")
        return self.model.objects.visible_to(access)

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except Exception as exc:  # malformed ids (bad UUIDs) are "not found" as well
            if isinstance(exc, serializers.ValidationError):
                raise
            self.fail("does_not_exist", slug_name=self.slug_field, value=str(data))
