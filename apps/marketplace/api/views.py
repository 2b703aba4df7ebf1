"""The marketplace in the main API: problems, algos, data, learnuplets and preduplets of a
project, read-only (they are created through the `/orchestrator/` gateway), with filters; the
project's compute API (`compute`: read by members, set by project admins) and the pushes to it
(`pushes`, with `retry` for project admins)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.api.views import ProjectScopedAPIView, ProjectScopedViewSet
from apps.core.exceptions import NotFound, ValidationFailed
from apps.marketplace import push
from apps.marketplace.api import serializers as s
from apps.marketplace.api.filters import ComputePushFilter, UpletFilter
from apps.marketplace.models import (
    Algo,
    ComputeEndpoint,
    ComputePush,
    Data,
    Learnuplet,
    Preduplet,
    Problem,
)


class _ReadOnlyViewSet(ProjectScopedViewSet):
    lookup_field = "uuid"
    related: tuple[str, ...] = ("owner",)
    prefetch: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()

    def safely_filter_queryset(self, queryset):
        queryset = queryset.select_related(*self.related).order_by("-created_at", "-id")
        if self.prefetch:
            queryset = queryset.prefetch_related(*self.prefetch)
        if getattr(self, "action", None) != "list" or not self.filters:
            return queryset
        return UpletFilter.apply(self.request, queryset, names=self.filters)

    def list(self, request, project_id=None):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, project_id=None, **kwargs):
        return Response(self.get_serializer(self.get_object()).data)


class ProblemViewSet(_ReadOnlyViewSet):
    """Problems of the project's marketplace."""

    queryset = Problem.objects.all()
    serializer_class = s.ProblemSerializer
    lookup_url_kwarg = "problem_uuid"


def _filter_parameters(*names: str) -> list[OpenApiParameter]:
    described = {
        "problem": "Only those of this problem (uuid).",
        "algo": "Only those of this algo (uuid).",
        "status": "todo, pending, done or failed.",
    }
    return [OpenApiParameter(n, str, description=described[n]) for n in names]


@extend_schema_view(list=extend_schema(parameters=_filter_parameters("problem")))
class AlgoViewSet(_ReadOnlyViewSet):
    """Algos (Orchard models or external ones) submitted to the project's problems."""

    queryset = Algo.objects.all()
    serializer_class = s.AlgoSerializer
    lookup_url_kwarg = "algo_uuid"
    related = ("owner", "problem")
    filters = ("problem",)


class DataViewSet(_ReadOnlyViewSet):
    """Data registered for the project's problems (Orchard datasets or external files)."""

    queryset = Data.objects.all()
    serializer_class = s.DataSerializer
    lookup_url_kwarg = "data_uuid"
    prefetch = ("problems",)


@extend_schema_view(list=extend_schema(parameters=_filter_parameters("problem", "algo", "status")))
class LearnupletViewSet(_ReadOnlyViewSet):
    """Learning tasks: ranks of each algo, their status, perfs and models."""

    queryset = Learnuplet.objects.all()
    serializer_class = s.LearnupletSerializer
    lookup_url_kwarg = "learnuplet_uuid"
    related = ("owner", "problem", "algo", "claimed_by")
    filters = ("problem", "algo", "status")


@extend_schema_view(list=extend_schema(parameters=_filter_parameters("problem", "status")))
class PredupletViewSet(_ReadOnlyViewSet):
    """Prediction tasks and where their predictions are stored."""

    queryset = Preduplet.objects.all()
    serializer_class = s.PredupletSerializer
    lookup_url_kwarg = "preduplet_uuid"
    related = ("owner", "problem", "claimed_by")
    filters = ("problem", "status")


class ComputeEndpointView(ProjectScopedAPIView):
    """The project's compute API: runnable uplets are POSTed to `{url}/learn` and `{url}/pred`
    (as upstream's orchestrator does with COMPUTE_URL) instead of the built-in compute. GET for
    members; PUT and DELETE (back to the built-in compute) for project admins."""

    queryset = ComputeEndpoint.objects.all()
    serializer_class = s.ComputeEndpointSerializer
    admin_actions = frozenset({"put", "delete"})

    def _endpoint(self):
        endpoint = self.get_queryset().first()
        if endpoint is None:
            raise NotFound("This project has no compute API: the built-in compute runs its uplets.")
        return endpoint

    def get(self, request, project_id):
        return Response(s.ComputeEndpointSerializer(self._endpoint()).data)

    @extend_schema(request=s.ComputeEndpointInputSerializer, responses=s.ComputeEndpointSerializer)
    def put(self, request, project_id):
        data = s.ComputeEndpointInputSerializer(data=request.data)
        if not data.is_valid():
            raise ValidationFailed("Invalid compute API.", details=data.errors)
        endpoint = push.compute_endpoint_set(
            access=self.access,
            url=data.validated_data["url"],
            enabled=data.validated_data["enabled"],
        )
        return Response(s.ComputeEndpointSerializer(endpoint).data)

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def delete(self, request, project_id):
        self._endpoint()
        push.compute_endpoint_delete(access=self.access)
        return Response({"deleted": True})


@extend_schema_view(
    list=extend_schema(
        parameters=[OpenApiParameter("state", str, description="pending, delivered or failed.")]
    )
)
class ComputePushViewSet(ProjectScopedViewSet):
    """Pushes of runnable uplets to the project's compute API (the outbox), newest first."""

    queryset = ComputePush.objects.all()
    serializer_class = s.ComputePushSerializer
    lookup_url_kwarg = "push_id"
    admin_actions = frozenset({"retry"})

    def safely_filter_queryset(self, queryset):
        queryset = queryset.order_by("-created_at", "-id")
        if getattr(self, "action", None) != "list":
            return queryset
        return ComputePushFilter.apply(self.request, queryset)

    def list(self, request, project_id=None):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, project_id=None, push_id=None):
        return Response(self.get_serializer(self._push()).data)

    @extend_schema(request=None, responses=s.ComputePushSerializer)
    @action(detail=True, methods=["post"], url_path="retry")
    def retry(self, request, project_id=None, push_id=None):
        """Queue a failed push again (attempts reset; 409 when it is not failed)."""
        return Response(self.get_serializer(push.push_retry(push=self._push())).data)

    def _push(self):
        value = self.kwargs.get("push_id", "")
        if not str(value).isdigit():
            raise NotFound()
        return self.get_object()
