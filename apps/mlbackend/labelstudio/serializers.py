"""Serializers of the Label Studio backends in the main API."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.clusters.models import Checkpoint, Cluster
from apps.core.api.serializers import ProjectRelatedField, StrictSerializer
from apps.core.tenancy import Visibility
from apps.mlbackend.models import LabelStudioAnnotation, LabelStudioBackend, LabelStudioModelVersion
from apps.training.models import Experiment


class LabelStudioProjectSerializer(serializers.Serializer):
    ls_project = serializers.CharField(help_text="Label Studio's project id.")
    cluster_id = serializers.UUIDField(allow_null=True, help_text="Its own model.")
    checkpoint_id = serializers.UUIDField(allow_null=True)
    model_version = serializers.CharField()
    interface = serializers.JSONField()
    label_studio_url = serializers.CharField()
    last_setup_at = serializers.DateTimeField(allow_null=True)
    last_predict = serializers.JSONField()


class BackendSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(help_text="The URL to paste into Label Studio.")
    secret_url = serializers.SerializerMethodField(
        help_text="The URL to paste into Label Studio instead of `url` when the backend has Basic "
        "credentials: the annotation webhook Label Studio creates under it is authenticated by "
        "the secret in it (Label Studio sends webhooks without credentials). Shown to those "
        "who may change the backend; null for others."
    )
    last_predict = serializers.JSONField(
        read_only=True,
        help_text="The last /predict batch of the backend's first Label Studio project: tasks, "
        "predicted, failed, seconds, and the failed tasks with their reasons.",
    )
    projects = serializers.SerializerMethodField(
        help_text="Further Label Studio projects served by this URL, each with its own model."
    )
    cluster_id = serializers.UUIDField(read_only=True, allow_null=True)
    checkpoint_id = serializers.UUIDField(read_only=True, allow_null=True)
    experiment_id = serializers.CharField(read_only=True, allow_null=True)
    served_run_id = serializers.SerializerMethodField(
        help_text="The run whose best checkpoint an experiment-bound backend predicts with "
        "(its experiment's latest completed run); null before one completed, and for "
        "model-bound backends."
    )
    model_version = serializers.CharField(read_only=True)
    has_credentials = serializers.BooleanField(read_only=True)
    annotation_count = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)

    class Meta:
        model = LabelStudioBackend
        fields = [
            "id",
            "name",
            "url",
            "secret_url",
            "cluster_id",
            "checkpoint_id",
            "experiment_id",
            "served_run_id",
            "label_config",
            "from_name",
            "interface",
            "has_credentials",
            "basic_auth_user",
            "allowed_hosts",
            "allow_private_networks",
            "train_on_annotation",
            "train_params",
            "label_studio_url",
            "ls_project",
            "last_setup_at",
            "version",
            "model_version",
            "last_predict",
            "projects",
            "annotation_count",
            "owner",
            "visibility",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_annotation_count(self, obj) -> int:
        # Lists annotate the count (one query per page); a single object counts its own.
        count = getattr(obj, "annotation_count", None)
        return count if count is not None else obj.annotations.count()

    def get_served_run_id(self, obj) -> str | None:
        if obj.experiment_id is None:
            return None
        if "served_run_pk" in obj.__dict__ and "_served_run" not in obj.__dict__:
            return obj.served_run_pk  # annotated by the list (selectors.with_served_run)
        run = obj.served_run
        return str(run.pk) if run is not None else None

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj) -> str:
        return self._absolute(f"/ml/{obj.pk}/")

    @extend_schema_field(OpenApiTypes.URI)
    def get_secret_url(self, obj) -> str | None:
        access = self.context.get("access")
        if access is None or not access.can_edit(obj):
            return None
        return self._absolute(f"/ml/{obj.pk}/s/{obj.webhook_secret}/")

    @extend_schema_field(LabelStudioProjectSerializer(many=True))
    def get_projects(self, obj) -> list[dict]:
        rows = obj.ls_projects.all()
        return LabelStudioProjectSerializer(rows, many=True).data

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class _BackendFields(StrictSerializer):
    name = serializers.CharField(max_length=200)
    cluster_id = ProjectRelatedField(
        model=Cluster,
        slug_field="id",
        required=False,
        help_text="The model to serve and train (give this or experiment_id).",
    )
    experiment_id = ProjectRelatedField(
        model=Experiment,
        slug_field="id",
        required=False,
        help_text="Instead of a model: serve the best checkpoint of this experiment's latest "
        "completed run (give this or cluster_id).",
    )
    checkpoint_id = ProjectRelatedField(
        model=Checkpoint, slug_field="id", required=False, allow_null=True
    )
    label_config = serializers.CharField(
        required=False, allow_blank=True, max_length=256 * 1024, trim_whitespace=False
    )
    from_name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    basic_auth_user = serializers.CharField(required=False, allow_blank=True, max_length=150)
    basic_auth_password = serializers.CharField(
        required=False, allow_blank=True, write_only=True, max_length=200, trim_whitespace=False
    )
    allowed_hosts = serializers.ListField(
        child=serializers.CharField(max_length=260), required=False, max_length=100
    )
    allow_private_networks = serializers.BooleanField(required=False)
    train_on_annotation = serializers.BooleanField(required=False)
    train_params = serializers.DictField(required=False)
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)


class BackendCreateSerializer(_BackendFields):
    pass


class BackendUpdateSerializer(_BackendFields):
    """Every field optional; `basic_auth_user` and `basic_auth_password` change together."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("partial", True)
        super().__init__(*args, **kwargs)


class AnnotationSerializer(serializers.ModelSerializer):
    class Meta:
        model = LabelStudioAnnotation
        fields = [
            "annotation_id",
            "task_id",
            "ls_project",
            "label",
            "was_cancelled",
            "task_data",
            "result",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ModelVersionSerializer(serializers.ModelSerializer):
    model_version = serializers.CharField(source="name", read_only=True)
    checkpoint_id = serializers.UUIDField(read_only=True, allow_null=True)
    task_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = LabelStudioModelVersion
        fields = [
            "number",
            "model_version",
            "checkpoint_id",
            "task_id",
            "labels",
            "metrics",
            "created_at",
        ]
        read_only_fields = fields


class TrainingTaskSerializer(serializers.Serializer):
    task_id = serializers.UUIDField()
    state = serializers.CharField()
    created = serializers.BooleanField()
