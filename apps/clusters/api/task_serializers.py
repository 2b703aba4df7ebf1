from rest_framework import serializers

from apps.clusters.models import Cluster, RequestResult
from apps.clusters.services import CLUSTER_TARGET
from apps.core.api.serializers import ProjectRelatedField, StrictSerializer
from apps.datasets.models import Dataset
from apps.tasks.models import Task, TaskState

CREATABLE_KINDS = ("train", "request")


class ClusterIdField(serializers.UUIDField):
    """The cluster a task works on (its target), or None."""

    def __init__(self, **kwargs) -> None:
        super().__init__(read_only=True, allow_null=True, **kwargs)

    def get_attribute(self, instance: Task):
        return instance.target_id if instance.target_type == CLUSTER_TARGET else None


class TaskSerializer(serializers.ModelSerializer):
    cluster_id = ClusterIdField()
    # The dataset the task reads (apps.datasets records it); None once deleted.
    dataset_id = serializers.UUIDField(
        source="dataset_link.dataset_id", read_only=True, allow_null=True
    )
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)

    class Meta:
        model = Task
        fields = [
            "id",
            "name",
            "kind",
            "cluster_id",
            "dataset_id",
            "queue",
            "state",
            "progress",
            "attempts",
            "max_attempts",
            "stop_requested",
            "error",
            "params",
            "result",
            "owner",
            "visibility",
            "queued_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "created_at",
        ]
        read_only_fields = fields


class TaskCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=CREATABLE_KINDS)
    cluster_id = ProjectRelatedField(model=Cluster, slug_field="id")
    dataset_id = ProjectRelatedField(model=Dataset, slug_field="id")
    params = serializers.DictField(required=False, default=dict)


class TaskFilterSerializer(serializers.Serializer):
    cluster = serializers.UUIDField(required=False)
    state = serializers.ChoiceField(choices=TaskState.choices, required=False)
    kind = serializers.CharField(required=False, max_length=32)


class RequestResultSerializer(serializers.ModelSerializer):
    cluster_id = serializers.UUIDField(read_only=True, allow_null=True)
    dataset_id = serializers.UUIDField(read_only=True, allow_null=True)
    task_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = RequestResult
        fields = [
            "id",
            "name",
            "task_id",
            "cluster_id",
            "dataset_id",
            "num_samples",
            "shape",
            "has_logits",
            "summary",
            "visibility",
            "created_at",
        ]
        read_only_fields = fields


class RequestResultDetailSerializer(RequestResultSerializer):
    outputs = serializers.SerializerMethodField()

    class Meta(RequestResultSerializer.Meta):
        fields = [*RequestResultSerializer.Meta.fields, "outputs"]
        read_only_fields = fields

    def get_outputs(self, obj) -> list[int]:
        """The predicted class of the first `limit` samples (query parameter, default 100)."""
        from apps.clusters.services import request_result_classes

        limit = self.context.get("outputs_limit", 100)
        try:
            return [int(v) for v in request_result_classes(obj)[:limit]]
        except Exception:
            return []


class ResultCheckSerializer(StrictSerializer):
    dataset_id = ProjectRelatedField(model=Dataset, slug_field="id")


class AccuracySerializer(serializers.Serializer):
    accuracy = serializers.FloatField(help_text="Percent of samples whose class matches.")
