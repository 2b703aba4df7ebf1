from rest_framework import serializers

from apps.clusters.models import Checkpoint, Cluster, ClusterMode, Host
from apps.core.api.serializers import ProjectRelatedField, StrictSerializer


class ClusterSerializer(serializers.ModelSerializer):
    host_id = serializers.CharField(read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)

    class Meta:
        model = Cluster
        fields = [
            "id",
            "name",
            "template",
            "shape",
            "source",
            "mode",
            "host_id",
            "version",
            "owner",
            "visibility",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ClusterCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    template = serializers.CharField(max_length=1_000_000, trim_whitespace=False)
    seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)


class ClusterModeSerializer(StrictSerializer):
    mode = serializers.ChoiceField(choices=ClusterMode.choices)


class ClusterHostSerializer(StrictSerializer):
    host_id = serializers.CharField(max_length=32)


class CheckpointSerializer(serializers.ModelSerializer):
    cluster_id = serializers.UUIDField(read_only=True, allow_null=True)
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)

    class Meta:
        model = Checkpoint
        fields = [
            "id",
            "name",
            "cluster_id",
            "size_bytes",
            "metadata",
            "owner",
            "visibility",
            "created_at",
        ]
        read_only_fields = fields


class CheckpointCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)


class CheckpointRestoreSerializer(StrictSerializer):
    cluster_id = ProjectRelatedField(model=Cluster, slug_field="id")


class HostSerializer(serializers.ModelSerializer):
    class Meta:
        model = Host
        fields = ["id", "kind", "name", "memory_bytes", "state", "details", "updated_at"]
        read_only_fields = fields
