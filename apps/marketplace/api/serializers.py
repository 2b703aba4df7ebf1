"""Read-only views of the marketplace in the main API (studio conventions)."""

from rest_framework import serializers

from apps.marketplace.models import Algo, Data, Learnuplet, Preduplet, Problem, UpletStatus


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
    "timestamp_done",
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
    data = serializers.ListField(child=serializers.UUIDField(), read_only=True)

    class Meta:
        model = Preduplet
        fields = [*_UPLET_FIELDS, "model", "data", "prediction_storage_uuid"]
        read_only_fields = fields


class UpletFilterSerializer(serializers.Serializer):
    problem = serializers.UUIDField(required=False)
    algo = serializers.UUIDField(required=False)
    status = serializers.ChoiceField(choices=UpletStatus.choices, required=False)
