from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.clusters.api import views

router = SimpleRouter(trailing_slash=False)
router.register(
    r"projects/(?P<project_id>[^/]+)/clusters", views.ClusterViewSet, basename="cluster"
)
router.register(
    r"projects/(?P<project_id>[^/]+)/checkpoints", views.CheckpointViewSet, basename="checkpoint"
)

urlpatterns = [
    path("hosts", views.HostListView.as_view(), name="host-list"),
    *router.urls,
]
