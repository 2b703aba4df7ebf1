"""Main-API routes of the mlbackend app (under /api/): each half keeps its own list."""

from apps.mlbackend.labelstudio.urls import api_urlpatterns as labelstudio_api_urlpatterns

urlpatterns: list = [
    # Label Studio ML backends: /api/mlbackend/{project_id}/backends...
    *labelstudio_api_urlpatterns,
]
