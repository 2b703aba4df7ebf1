from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.api.serializers import StrictSerializer
from apps.core.tenancy import Visibility
from apps.exports.formats import FORMATS, UNAVAILABLE_FORMATS
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
        choices=[*ExportFormat.values, *UNAVAILABLE_FORMATS],
        error_messages={
            "invalid_choice": f'Unknown format "{{input}}" (known: {", ".join(FORMATS)}).'
        },
        help_text="onnx, torchscript or safetensors (tensorrt and openvino answer "
        "EXPORT_FORMAT_UNAVAILABLE).",
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


class ValidationSerializer(serializers.Serializer):
    """The plan's `validation` ({passed, max_diff}), with what Orchard's check compared."""

    passed = serializers.BooleanField()
    max_diff = serializers.FloatField(allow_null=True, help_text="Largest absolute difference.")
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
    experiment_id = serializers.SerializerMethodField()
    run_id = serializers.SerializerMethodField()
    checkpoint = serializers.SerializerMethodField()
    validation = serializers.SerializerMethodField()
    output_file = serializers.SerializerMethodField()
    output_size_mb = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()
    task_id = serializers.UUIDField(read_only=True, allow_null=True)
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)

    class Meta:
        model = Export
        fields = [
            "id",
            "export_id",
            "experiment_id",
            "run_id",
            "checkpoint",
            "format",
            "options",
            "created_at",
            "status",
            "output_file",
            "output_size_mb",
            "validation",
            "name",
            "source",
            "progress",
            "error",
            "notes",
            "details",
            "filename",
            "size_bytes",
            "sha256",
            "download_url",
            "task_id",
            "owner",
            "visibility",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def _state(self, obj):
        cache = self.context.setdefault("_export_states", {})
        if obj.pk not in cache:
            cache[obj.pk] = export_state(obj)
        return cache[obj.pk]

    def get_experiment_id(self, obj) -> str | None:
        return obj.experiment_id or None

    def get_run_id(self, obj) -> str | None:
        return obj.run_id or None

    def get_checkpoint(self, obj) -> str | None:
        """best or last (a run's checkpoint), else null."""
        return obj.run_checkpoint or None

    @extend_schema_field(ValidationSerializer(allow_null=True))
    def get_validation(self, obj) -> dict | None:
        """The check of the exported file against the original model (null until it ran):
        `passed`, `max_diff`, then `max_rel_diff`, `rtol`, `atol`, `compared`, `inputs`
        (dataset, random or none), `num_samples`, `input_shape`, `dataset_id`."""
        if not obj.parity:
            return None
        parity = dict(obj.parity)
        return {
            "passed": bool(parity.pop("passed", False)),
            "max_diff": parity.get("max_abs_diff"),
            **parity,
        }

    def get_output_file(self, obj) -> str | None:
        """The file's name in the export's folder (model.onnx, ...), once completed."""
        return obj.file or None

    def get_output_size_mb(self, obj) -> float | None:
        return round(obj.size_bytes / 1e6, 3) if obj.file else None

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
    name = serializers.CharField(help_text="The format's id, as a create request sends it.")
    display_name = serializers.CharField()
    available = serializers.BooleanField()
    id = serializers.CharField()
    extension = serializers.CharField()
    description = serializers.CharField()
    validation = serializers.CharField(help_text="What the check after the export compares.")
    options = FormatOptionSerializer(many=True)
