"""Clusters, checkpoints and hosts of the main API."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.clusters import selectors, services
from apps.clusters.api import serializers as s
from apps.clusters.api.filters import CheckpointFilter
from apps.clusters.models import Checkpoint, Cluster
from apps.core.api.views import GlobalAPIView, ProjectScopedViewSet


class ClusterViewSet(ProjectScopedViewSet):
    """Networks of a project, built from Hanami templates; their mode, host and checkpoints."""

    queryset = Cluster.objects.all()
    serializer_class = s.ClusterSerializer
    lookup_url_kwarg = "cluster_id"

    def safely_filter_queryset(self, queryset):
        return queryset.select_related("owner").order_by("-created_at")

    def list(self, request, project_id=None):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=s.ClusterCreateSerializer, responses={201: s.ClusterSerializer})
    def create(self, request, project_id=None):
        data = s.ClusterCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cluster = services.cluster_create(
            project=self.access.project,
            actor=request.user,
            name=data.validated_data["name"],
            template_text=data.validated_data["template"],
            seed=data.validated_data.get("seed"),
        )
        return Response(self.get_serializer(cluster).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, project_id=None, cluster_id=None):
        return Response(self.get_serializer(self.get_object()).data)

    def destroy(self, request, project_id=None, cluster_id=None):
        services.cluster_delete(cluster=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.ClusterModeSerializer, responses=s.ClusterSerializer)
    @action(detail=True, methods=["put"], url_path="mode")
    def mode(self, request, project_id=None, cluster_id=None):
        cluster = self.get_object()
        data = s.ClusterModeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cluster = services.cluster_set_mode(cluster=cluster, mode=data.validated_data["mode"])
        return Response(self.get_serializer(cluster).data)

    @extend_schema(request=s.ClusterHostSerializer, responses=s.ClusterSerializer)
    @action(detail=True, methods=["put"], url_path="host")
    def host(self, request, project_id=None, cluster_id=None):
        cluster = self.get_object()
        data = s.ClusterHostSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cluster = services.cluster_switch_host(
            cluster=cluster, host_id=data.validated_data["host_id"]
        )
        return Response(self.get_serializer(cluster).data)

    @extend_schema(request=s.CheckpointCreateSerializer, responses={201: s.CheckpointSerializer})
    @action(detail=True, methods=["post"], url_path="checkpoints")
    def checkpoints(self, request, project_id=None, cluster_id=None):
        cluster = self.get_object()
        data = s.CheckpointCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        checkpoint = services.checkpoint_save(
            cluster=cluster, actor=request.user, name=data.validated_data["name"]
        )
        return Response(s.CheckpointSerializer(checkpoint).data, status=status.HTTP_201_CREATED)


class CheckpointViewSet(ProjectScopedViewSet):
    """Saved weights of the project's clusters; restorable into any compatible cluster."""

    queryset = Checkpoint.objects.all()
    serializer_class = s.CheckpointSerializer
    lookup_url_kwarg = "checkpoint_id"

    def safely_filter_queryset(self, queryset):
        queryset = queryset.select_related("owner").order_by("-created_at")
        return CheckpointFilter.apply(self.request, queryset) if self.request else queryset

    def list(self, request, project_id=None):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, project_id=None, checkpoint_id=None):
        return Response(self.get_serializer(self.get_object()).data)

    def destroy(self, request, project_id=None, checkpoint_id=None):
        services.checkpoint_delete(checkpoint=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.CheckpointRestoreSerializer, responses=s.ClusterSerializer)
    @action(detail=True, methods=["post"], url_path="restore")
    def restore(self, request, project_id=None, checkpoint_id=None):
        checkpoint = self.get_object()
        data = s.CheckpointRestoreSerializer(
            data=request.data, context=self.get_serializer_context()
        )
        data.is_valid(raise_exception=True)
        # The serializer found the cluster among those the caller sees; fetched again to change it.
        cluster = selectors.cluster_get(
            access=self.access, cluster_id=data.validated_data["cluster_id"].pk, for_edit=True
        )
        cluster = services.checkpoint_restore(checkpoint=checkpoint, cluster=cluster)
        return Response(s.ClusterSerializer(cluster).data)


class HostListView(GlobalAPIView):
    """The devices tasks can run on; their ids are the task queue names."""

    tenancy_exempt_reason = "hosts are the machine's devices, shared by every project"

    @extend_schema(responses=s.HostSerializer(many=True))
    def get(self, request):
        services.host_ensure_cpu()
        return Response(s.HostSerializer(selectors.host_list(), many=True).data)
