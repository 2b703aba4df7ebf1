"""Routes of the exports API (studio seed section 6); `formats` routes before `{project_id}`."""

from django.urls import path

from apps.exports.api import views

urlpatterns = [
    path("export/formats", views.ExportFormatsView.as_view(), name="export-formats"),
    path("export/<str:project_id>", views.ExportListView.as_view(), name="export-list"),
    path(
        "export/<str:project_id>/<str:export_id>",
        views.ExportDetailView.as_view(),
        name="export-detail",
    ),
    path(
        "export/<str:project_id>/<str:export_id>/download",
        views.ExportDownloadView.as_view(),
        name="export-download",
    ),
]
