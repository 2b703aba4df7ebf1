"""Exports of the main API (studio seed section 6): `/api/export/formats`, and per project
`/api/export/{project_id}` (list, create + start), `/{export_id}` (status, delete) and
`/{export_id}/download`."""

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response

from apps.core.api.views import GlobalAPIView, ProjectScopedAPIView
from apps.core.exceptions import Conflict
from apps.exports import selectors, services
from apps.exports.api import serializers as s
from apps.exports.api.filters import ExportFilter
from apps.exports.exceptions import ExportFormatUnavailable
from apps.exports.formats import UNAVAILABLE_FORMATS, format_catalogue
from apps.exports.models import Export

_EXPORT_ID = OpenApiParameter("export_id", OpenApiTypes.STR, OpenApiParameter.PATH)


class ExportFormatsView(GlobalAPIView):
    """The export formats with their options and defaults."""

    tenancy_exempt_reason = "a fixed catalogue of export formats; holds no tenant data"

    @extend_schema(responses=s.FormatSerializer(many=True))
    def get(self, request):
        return Response(format_catalogue())


class ExportListView(ProjectScopedAPIView):
    """The project's exports (GET, newest first) and a new export, queued at once (POST)."""

    queryset = Export.objects.all()
    serializer_class = s.ExportSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("format", OpenApiTypes.STR, description="Only exports of it."),
            OpenApiParameter(
                "export_format", OpenApiTypes.STR, description="The same (older name)."
            ),
        ],
        responses=s.ExportSerializer(many=True),
    )
    def get(self, request, project_id):
        exports = ExportFilter.apply(request, selectors.export_list(access=self.access))
        page = self.paginate_queryset(exports)
        return self.get_paginated_response(
            s.ExportSerializer(page, many=True, context=self.get_serializer_context()).data
        )

    @extend_schema(request=s.ExportCreateSerializer, responses=s.ExportSerializer)
    def post(self, request, project_id):
        data = s.ExportCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values["format"] in UNAVAILABLE_FORMATS:
            raise ExportFormatUnavailable.of(values["format"])
        source = selectors.export_source_get(
            access=self.access,
            cluster_id=values.get("cluster_id"),
            checkpoint_id=values.get("checkpoint_id"),
            run_id=values.get("run_id"),
            experiment_id=values.get("experiment_id"),
            which=values.get("checkpoint"),
        )
        export = services.export_create(
            project=self.access.project,
            actor=request.user,
            source=source,
            fmt=values["format"],
            options=values.get("options") or {},
            name=values.get("name"),
            visibility=values.get("visibility"),
        )
        # The row as created (its owner and task in memory): no read back.
        return Response(s.ExportSerializer(export).data)  # the plan answers creates with 200


@extend_schema(parameters=[_EXPORT_ID])
class ExportDetailView(ProjectScopedAPIView):
    """One export: its status with the parity check's result (GET); delete it and its file."""

    queryset = Export.objects.all()
    serializer_class = s.ExportSerializer

    def get(self, request, project_id, export_id):
        export = selectors.export_get(access=self.access, export_id=export_id)
        return Response(s.ExportSerializer(export).data)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def delete(self, request, project_id, export_id):
        export = selectors.export_get(
            access=self.access,
            export_id=export_id,
            for_edit=True,
            denied="Only the owner or a project admin may delete this export.",
        )
        services.export_delete(export=export)
        # The plan answers every delete with an envelope and 200.
        return Response({"id": export_id, "export_id": export_id, "deleted": True})


@extend_schema(parameters=[_EXPORT_ID])
class ExportDownloadView(ProjectScopedAPIView):
    """The exported file, once its parity check passed (409 before, or after a failure)."""

    queryset = Export.objects.all()

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request, project_id, export_id):
        export = selectors.export_get(access=self.access, export_id=export_id)
        state = selectors.export_state(export)
        if state.status != "completed" or not export.file:
            reason = f": {state.error}" if state.error else ""
            raise Conflict(f"The export is {state.status}, not downloadable{reason}")
        path = selectors.export_file_path(export)
        try:
            handle = open(path, "rb")  # FileResponse closes it
        except FileNotFoundError:
            raise Conflict("The export's file is missing.") from None
        return FileResponse(
            handle,
            as_attachment=True,
            filename=export.filename,
            content_type="application/octet-stream",
        )
