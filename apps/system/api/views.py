from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from apps.accounts.selectors import project_list_for
from apps.core.api.exceptions import error_body
from apps.core.api.views import GlobalAPIView
from apps.system import selectors


class HealthView(GlobalAPIView):
    """Database, broker and channel layer; 200 when all answer, 503 otherwise."""

    tenancy_exempt_reason = "platform health, no tenant data"
    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(
        auth=[],
        responses={
            200: inline_serializer(
                "Health",
                {"ok": serializers.BooleanField(), "checks": serializers.DictField()},
            ),
            503: OpenApiResponse(description="A dependency is down (error envelope)."),
        },
    )
    def get(self, request):
        result = selectors.health()
        if result["ok"]:
            return Response(result)
        failed = ", ".join(name for name, c in result["checks"].items() if not c["ok"])
        return Response(
            error_body("SERVICE_UNAVAILABLE", f"Unhealthy: {failed}.", result),
            status=503,
            exception=True,
        )


class DevicesView(GlobalAPIView):
    """Training devices: the CPU and every GPU found through NVML."""

    tenancy_exempt_reason = "devices of the host, no tenant data"

    @extend_schema(
        responses=inline_serializer(
            "Devices",
            {
                "devices": serializers.ListField(child=serializers.DictField()),
                "cuda_available": serializers.BooleanField(),
                "cuda_version": serializers.CharField(allow_null=True),
                "default_selected": serializers.ListField(child=serializers.CharField()),
            },
        )
    )
    def get(self, request):
        return Response(selectors.devices())


class WorkspaceView(GlobalAPIView):
    """Disk usage of the data directory, and of each project the caller can see."""

    tenancy_exempt_reason = "per-project figures are limited to the caller's projects"

    @extend_schema(
        responses=inline_serializer(
            "Workspace",
            {
                "data_dir": serializers.CharField(
                    required=False, help_text="The server's data directory (global admins only)."
                ),
                "disk_total_bytes": serializers.IntegerField(),
                "disk_used_bytes": serializers.IntegerField(),
                "disk_free_bytes": serializers.IntegerField(),
                "data_bytes": serializers.IntegerField(),
                "projects": serializers.DictField(child=serializers.IntegerField()),
            },
        )
    )
    def get(self, request):
        ids = list(project_list_for(user=request.user).values_list("pk", flat=True))
        data = selectors.workspace(project_ids=ids)
        if not request.user.is_superuser:
            data.pop("data_dir")
        return Response(data)
