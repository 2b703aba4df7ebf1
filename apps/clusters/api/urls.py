from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.clusters.api import task_views, views

router = SimpleRouter(trailing_slash=False)
router.register(
    r"projects/(?P<project_id>[^/]+)/clusters", views.ClusterViewSet, basename="cluster"
)
router.register(
    r"projects/(?P<project_id>[^/]+)/checkpoints", views.CheckpointViewSet, basename="checkpoint"
)
router.register(r"projects/(?P<project_id>[^/]+)/tasks", task_views.TaskViewSet, basename="task")
router.register(
    r"projects/(?P<project_id>[^/]+)/results", task_views.RequestResultViewSet, basename="result"
)

urlpatterns = [
    path("hosts", views.HostListView.as_view(), name="host-list"),
    *router.urls,
]
