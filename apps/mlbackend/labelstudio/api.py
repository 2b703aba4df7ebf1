"""Label Studio ML backends in the main API: `/api/mlbackend/{project_id}/backends[...]`."""

from django.db.models import Count
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.clusters import selectors as clusters_selectors
from apps.core.api.views import ProjectScopedViewSet
from apps.core.exceptions import Forbidden
from apps.mlbackend.labelstudio import selectors, services, training
from apps.mlbackend.labelstudio import serializers as s
from apps.mlbackend.models import LabelStudioBackend

_FIELD_SOURCES = {
    "cluster_id": "cluster",
    "checkpoint_id": "checkpoint",
    "experiment_id": "experiment",
}


class LabelStudioBackendViewSet(ProjectScopedViewSet):
    """ML backends Label Studio connects to (`url`), bound to a model or an experiment of the
    project; their stored annotations, trained versions, and training runs."""

    queryset = LabelStudioBackend.objects.all()
    serializer_class = s.BackendSerializer
    lookup_url_kwarg = "backend_id"

    def safely_filter_queryset(self, queryset):
        return selectors.with_served_run(
            queryset.select_related("owner")
            .prefetch_related("ls_projects")
            .annotate(annotation_count=Count("annotations"))
            .order_by("-created_at")
        )

    def _checked_fields(self, validated: dict, backend: LabelStudioBackend | None = None) -> dict:
        """Service keyword arguments; binding a model the caller may not change is refused
        (training the backend writes that model's weights). Fetching from private networks
        is for project admins only: turning `allow_private_networks` on, or changing the
        `allowed_hosts` of a backend that has it on (which would aim it at other internal
        hosts), answers 403 to anyone else."""
        fields = {_FIELD_SOURCES.get(k, k): v for k, v in validated.items()}
        if not self.access.is_admin:
            turning_on = fields.get("allow_private_networks") is True and not (
                backend is not None and backend.allow_private_networks
            )
            retargeting = (
                backend is not None
                and backend.allow_private_networks
                and "allowed_hosts" in fields
                and list(fields["allowed_hosts"]) != list(backend.allowed_hosts or [])
            )
            if turning_on or retargeting:
                raise Forbidden(
                    "Only project admins may let a backend fetch from private networks "
                    "(allow_private_networks) or change the hosts such a backend fetches from."
                )
        if fields.get("cluster") is not None:
            # The serializer found the model among those the caller sees; fetched again to bind.
            fields["cluster"] = clusters_selectors.cluster_get(
                access=self.access,
                cluster_id=fields["cluster"].pk,
                for_edit=True,
                denied="Only the model's owner or a project admin may bind it to a backend.",
            )
        return fields

    def list(self, request, project_id=None):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=s.BackendCreateSerializer, responses={201: s.BackendSerializer})
    def create(self, request, project_id=None):
        data = s.BackendCreateSerializer(data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        backend = services.backend_create(
            project=self.access.project,
            actor=request.user,
            **self._checked_fields(data.validated_data),
        )
        return Response(self.get_serializer(backend).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, project_id=None, backend_id=None):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(request=s.BackendUpdateSerializer, responses=s.BackendSerializer)
    def partial_update(self, request, project_id=None, backend_id=None):
        backend = self.get_object()
        data = s.BackendUpdateSerializer(data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        backend = services.backend_update(
            backend=backend, **self._checked_fields(data.validated_data, backend)
        )
        return Response(self.get_serializer(backend).data)

    def destroy(self, request, project_id=None, backend_id=None):
        services.backend_delete(backend=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=s.AnnotationSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="annotations")
    def annotations(self, request, project_id=None, backend_id=None):
        page = self.paginate_queryset(selectors.annotation_list(backend=self.get_object()))
        return self.get_paginated_response(s.AnnotationSerializer(page, many=True).data)

    @extend_schema(responses=s.ModelVersionSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="versions", pagination_class=None)
    def versions(self, request, project_id=None, backend_id=None):
        versions = selectors.backend_versions(backend=self.get_object())
        return Response(s.ModelVersionSerializer(versions, many=True).data)

    @extend_schema(request=None, responses={201: s.TrainingTaskSerializer})
    @action(detail=True, methods=["post"], url_path="train")
    def train(self, request, project_id=None, backend_id=None):
        task, created = training.backend_train_start(
            backend=self.get_object(), actor=request.user, reuse_pending=False
        )
        return Response(
            {"task_id": str(task.pk), "state": task.state, "created": created},
            status=status.HTTP_201_CREATED,
        )
