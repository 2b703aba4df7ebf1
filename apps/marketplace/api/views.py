"""The marketplace in the main API: problems, algos, data, learnuplets and preduplets of a
project, read-only (they are created through the `/orchestrator/` gateway), with filters."""

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework.response import Response

from apps.core.api.views import ProjectScopedViewSet
from apps.core.exceptions import ValidationFailed
from apps.marketplace.api import serializers as s
from apps.marketplace.models import Algo, Data, Learnuplet, Preduplet, Problem


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
        params = {k: v for k, v in self.request.query_params.items() if k in self.filters}
        data = s.UpletFilterSerializer(data=params)
        if not data.is_valid():
            raise ValidationFailed("Invalid filter.", details=data.errors)
        for name, value in data.validated_data.items():
            lookup = name if name == "status" else f"{name}__uuid"
            queryset = queryset.filter(**{lookup: value})
        return queryset

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
