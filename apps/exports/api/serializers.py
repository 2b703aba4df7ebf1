from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.api.serializers import StrictSerializer
from apps.core.tenancy import Visibility
from apps.exports.formats import FORMATS
from apps.exports.models import Export, ExportFormat
from apps.exports.selectors import RUN_CHECKPOINTS, export_state


class ExportCreateSerializer(StrictSerializer):
    """Exactly one source: a run (`run_id`, `experiment_id`, `checkpoint`), `cluster_id` or
    `checkpoint_id`; then the format and its options."""

    name = serializers.CharField(max_length=200, required=False)
    experiment_id = serializers.CharField(max_length=64, required=False)
    run_id = serializers.CharField(max_length=64, required=False)
    checkpoint = serializers.ChoiceField(
        choices=RUN_CHECKPOINTS, required=False, help_text="The run's checkpoint (default best)."
    )
    cluster_id = serializers.CharField(max_length=64, required=False)
    checkpoint_id = serializers.CharField(max_length=64, required=False)
    format = serializers.ChoiceField(
        choices=ExportFormat.choices,
        error_messages={
            "invalid_choice": f'Unknown format "{{input}}" (known: {", ".join(FORMATS)}).'
        },
    )
    options = serializers.DictField(
        required=False, default=dict, help_text="See GET /api/export/formats."
    )
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)


class ExportSourceSerializer(serializers.Serializer):
    type = serializers.CharField(source="source_kind")
    cluster_id = serializers.UUIDField(allow_null=True)
    checkpoint_id = serializers.UUIDField(allow_null=True)
    experiment_id = serializers.CharField(allow_blank=True)
    run_id = serializers.CharField(allow_blank=True)
    checkpoint = serializers.CharField(source="run_checkpoint", allow_blank=True)


class ParitySerializer(serializers.Serializer):
    passed = serializers.BooleanField()
    max_abs_diff = serializers.FloatField(allow_null=True)
    max_rel_diff = serializers.FloatField(allow_null=True)
    rtol = serializers.FloatField()
    atol = serializers.FloatField()
    compared = serializers.CharField(help_text="What was compared with what.")
    inputs = serializers.CharField(help_text="dataset, random or none")
    dataset_id = serializers.CharField(required=False)
    dataset_name = serializers.CharField(required=False)
    num_samples = serializers.IntegerField()
    input_shape = serializers.ListField(child=serializers.IntegerField(), required=False)


class ExportSerializer(serializers.ModelSerializer):
    export_id = serializers.CharField(source="id", read_only=True)
    source = ExportSourceSerializer(source="*", read_only=True)
    status = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    parity = ParitySerializer(read_only=True, allow_null=True)
    download_url = serializers.SerializerMethodField()
    task_id = serializers.UUIDField(read_only=True, allow_null=True)
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)

    class Meta:
        model = Export
        fields = [
            "id",
            "export_id",
            "name",
            "format",
            "options",
            "source",
            "status",
            "progress",
            "error",
            "parity",
            "notes",
            "details",
            "filename",
            "size_bytes",
            "sha256",
            "download_url",
            "task_id",
            "owner",
            "visibility",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def _state(self, obj):
        cache = self.context.setdefault("_export_states", {})
        if obj.pk not in cache:
            cache[obj.pk] = export_state(obj)
        return cache[obj.pk]

    def get_status(self, obj) -> str:
        """pending, running, completed, failed or aborted."""
        return self._state(obj).status

    def get_progress(self, obj) -> float:
        return self._state(obj).progress

    def get_error(self, obj) -> str:
        return self._state(obj).error

    @extend_schema_field(OpenApiTypes.STR)
    def get_download_url(self, obj) -> str | None:
        """Where to download the file once the export is completed (its parity check passed)."""
        if self._state(obj).status != "completed" or not obj.file:
            return None
        return f"/api/export/{obj.project_id}/{obj.pk}/download"


class FormatOptionSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    default = serializers.JSONField(allow_null=True)
    description = serializers.CharField()
    available = serializers.BooleanField()
    note = serializers.CharField(required=False)


class FormatSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    extension = serializers.CharField()
    description = serializers.CharField()
    parity_check = serializers.CharField()
    options = FormatOptionSerializer(many=True)


class FormatListSerializer(serializers.Serializer):
    formats = FormatSerializer(many=True)
