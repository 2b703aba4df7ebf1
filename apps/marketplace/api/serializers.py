"""Read-only views of the marketplace in the main API (studio conventions)."""

from rest_framework import serializers

from apps.marketplace.models import (
    Algo,
    ComputeEndpoint,
    ComputePush,
    Data,
    Learnuplet,
    Preduplet,
    Problem,
)


class _OwnedSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)


class ProblemSerializer(_OwnedSerializer):
    test_dataset = serializers.ListField(child=serializers.UUIDField(), read_only=True)

    class Meta:
        model = Problem
        fields = [
            "uuid",
            "workflow",
            "test_dataset",
            "size_train_dataset",
            "owner",
            "visibility",
            "created_at",
        ]
        read_only_fields = fields


class AlgoSerializer(_OwnedSerializer):
    problem = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    cluster_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = Algo
        fields = [
            "uuid",
            "name",
            "problem",
            "cluster_id",
            "architecture",
            "owner",
            "visibility",
            "created_at",
        ]
        read_only_fields = fields


class DataSerializer(_OwnedSerializer):
    problems = serializers.SlugRelatedField(slug_field="uuid", many=True, read_only=True)
    dataset_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = Data
        fields = ["uuid", "problems", "dataset_id", "owner", "visibility", "created_at"]
        read_only_fields = fields


class _UpletSerializer(_OwnedSerializer):
    problem = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    task_id = serializers.UUIDField(read_only=True, allow_null=True)
    claimed_by = serializers.CharField(source="claimed_by.username", read_only=True, default=None)
    # A plain string in the schema: an enum named "status" would collide with other apps'.
    status = serializers.CharField(read_only=True, help_text="todo, pending, done or failed")
    claim_to_done_s = serializers.SerializerMethodField(
        help_text="Seconds from the claim (todo -> pending) to the report (done or failed)."
    )

    def get_claim_to_done_s(self, obj) -> float | None:
        return claim_to_done_s(obj)


def claim_to_done_s(uplet) -> float | None:
    """Seconds from an uplet's claim to its report; None until both happened."""
    if uplet.claimed_at is None or uplet.timestamp_done is None:
        return None
    return round((uplet.timestamp_done - uplet.claimed_at).total_seconds(), 3)


_UPLET_FIELDS = [
    "uuid",
    "problem",
    "workflow",
    "status",
    "worker",
    "claimed_by",
    "task_id",
    "owner",
    "visibility",
    "created_at",
    "claimed_at",
    "timestamp_done",
    "claim_to_done_s",
    "failure_reason",
]


class LearnupletSerializer(_UpletSerializer):
    algo = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    train_data = serializers.ListField(child=serializers.UUIDField(), read_only=True)
    test_data = serializers.ListField(child=serializers.UUIDField(), read_only=True)
    train_perf = serializers.JSONField(read_only=True, allow_null=True)
    test_perf = serializers.JSONField(read_only=True, allow_null=True)

    class Meta:
        model = Learnuplet
        fields = [
            *_UPLET_FIELDS,
            "algo",
            "rank",
            "model_start",
            "model_end",
            "train_data",
            "test_data",
            "perf",
            "train_perf",
            "test_perf",
        ]
        read_only_fields = fields


class PredupletSerializer(_UpletSerializer):
    data = serializers.SerializerMethodField(help_text="The data uuids (a list).")

    def get_data(self, obj) -> list[str]:
        return obj.data_uuids

    class Meta:
        model = Preduplet
        fields = [*_UPLET_FIELDS, "model", "data", "prediction_storage_uuid"]
        read_only_fields = fields


class ComputeEndpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = ComputeEndpoint
        fields = ["url", "enabled", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


class ComputeEndpointInputSerializer(serializers.Serializer):
    url = serializers.CharField(
        max_length=500, help_text="The compute API's base URL (pushes go to {url}/learn, /pred)."
    )
    enabled = serializers.BooleanField(required=False, default=True)


class ComputePushSerializer(serializers.ModelSerializer):
    task_id = serializers.UUIDField(read_only=True, allow_null=True)
    state = serializers.CharField(read_only=True, help_text="pending, delivered or failed")

    class Meta:
        model = ComputePush
        fields = [
            "id",
            "kind",
            "uplet_uuid",
            "url",
            "state",
            "attempts",
            "last_status",
            "last_error",
            "last_attempt_at",
            "delivered_at",
            "task_id",
            "created_at",
        ]
        read_only_fields = fields
