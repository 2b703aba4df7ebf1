"""Serializer bases: unknown fields are refused, and related fields are limited to the project."""

from rest_framework import serializers


class StrictSerializerMixin:
    """Refuse request fields the serializer does not declare (a typo is an error, not a no-op)."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
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
