"""Tasks and request results of the main API.

The main API creates the tasks of clusters (train, request) and shows every task of a project in
the cluster-centred JSON of those (`cluster_id`, `dataset_id`); the job engine has no routes."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.clusters import services as clusters
from apps.clusters.api import task_serializers as s
from apps.clusters.models import RequestResult
from apps.clusters.selectors import task_cluster_or_none
from apps.clusters.services import CLUSTER_TARGET, require_task_rights
from apps.core.api.views import ProjectScopedViewSet
from apps.core.exceptions import ValidationFailed
from apps.tasks import services
from apps.tasks.models import Task


class TaskViewSet(ProjectScopedViewSet):
    """Jobs of a project (train, request, ...): create, follow, abort (DELETE)."""

    queryset = Task.objects.all()
    serializer_class = s.TaskSerializer
    lookup_url_kwarg = "task_id"

    def safely_filter_queryset(self, queryset):
        queryset = queryset.select_related("owner", "dataset_link").order_by("-created_at")
        if getattr(self, "action", None) != "list":
            return queryset
        filters = s.TaskFilterSerializer(data=self.request.query_params)
        if not filters.is_valid():
            raise ValidationFailed("Invalid filter.", details=filters.errors)
        data = filters.validated_data
        if "cluster" in data:
            queryset = queryset.filter(target_type=CLUSTER_TARGET, target_id=data["cluster"])
        if "state" in data:
            queryset = queryset.filter(state=data["state"])
        if "kind" in data:
            queryset = queryset.filter(kind=data["kind"])
        return queryset

    @extend_schema(
        parameters=[
            OpenApiParameter("cluster", str, description="Only tasks of this cluster."),
            OpenApiParameter("state", str, description="queued, active, finished, ..."),
            OpenApiParameter("kind", str, description="train, request, ..."),
        ]
    )
    def list(self, request, project_id=None):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=s.TaskCreateSerializer, responses={201: s.TaskSerializer})
    def create(self, request, project_id=None):
        data = s.TaskCreateSerializer(data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        require_task_rights(
            access=self.access,
            kind=data.validated_data["kind"],
            cluster=data.validated_data["cluster_id"],
        )
        task = clusters.cluster_task_create(
            project=self.access.project,
            actor=request.user,
            kind=data.validated_data["kind"],
            name=data.validated_data["name"],
            cluster=data.validated_data["cluster_id"],
            dataset=data.validated_data["dataset_id"],
            params=data.validated_data.get("params") or {},
        )
        return Response(self.get_serializer(task).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, project_id=None, task_id=None):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        responses={200: s.TaskSerializer},
        description="Abort the task: a queued one at once, a running one between two steps.",
    )
    def destroy(self, request, project_id=None, task_id=None):
        task = services.task_abort(task=self.get_object())
        return Response(self.get_serializer(task).data)

    @extend_schema(
        request=None,
        responses=s.TaskSerializer,
        description="Queue a failed or aborted task again (attempts reset; 409 otherwise).",
    )
    @action(detail=True, methods=["post"], url_path="retry")
    def retry(self, request, project_id=None, task_id=None):
        task = self.get_object()
        cluster = task_cluster_or_none(task)
        require_task_rights(access=self.access, kind=task.kind, cluster=cluster)
        return Response(self.get_serializer(services.task_retry(task=task)).data)


class RequestResultViewSet(ProjectScopedViewSet):
    """Outputs of request tasks (same id and name as their task)."""

    queryset = RequestResult.objects.all()
    serializer_class = s.RequestResultSerializer
    lookup_url_kwarg = "result_id"

    def safely_filter_queryset(self, queryset):
        return queryset.order_by("-created_at")

    def list(self, request, project_id=None):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        responses=s.RequestResultDetailSerializer,
        parameters=[OpenApiParameter("limit", int, description="Outputs shown (default 100).")],
    )
    def retrieve(self, request, project_id=None, result_id=None):
        result = self.get_object()
        try:
            limit = max(0, min(int(request.query_params.get("limit", 100)), 100_000))
        except ValueError:
            raise ValidationFailed.for_field("limit", "must be an integer.") from None
        context = {**self.get_serializer_context(), "outputs_limit": limit}
        return Response(s.RequestResultDetailSerializer(result, context=context).data)

    def destroy(self, request, project_id=None, result_id=None):
        clusters.request_result_delete(result=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.ResultCheckSerializer, responses=s.AccuracySerializer)
    @action(detail=True, methods=["post"], url_path="check")
    def check(self, request, project_id=None, result_id=None):
        result = self.get_object()
        data = s.ResultCheckSerializer(data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        accuracy = clusters.request_result_check(
            result=result, dataset=data.validated_data["dataset_id"]
        )
        return Response({"accuracy": accuracy})
