"""Routes of the Label Studio half: the main API (`api_urlpatterns`, under /api/) and the
protocol gateway (`gateway_urlpatterns`, at the root: `/ml/<backend id>/...`)."""

from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from apps.mlbackend.labelstudio import api, views

router = SimpleRouter(trailing_slash=False)
router.register(
    r"mlbackend/(?P<project_id>[^/]+)/backends",
    api.LabelStudioBackendViewSet,
    basename="labelstudio-backend",
)
api_urlpatterns = router.urls

ROUTES = [
    ("", views.HealthView, "root"),
    ("health", views.HealthView, "health"),
    ("setup", views.SetupView, "setup"),
    ("predict", views.PredictView, "predict"),
    ("webhook", views.WebhookView, "webhook"),
    ("versions", views.VersionsView, "versions"),
    ("metrics", views.MetricsView, "metrics"),
    ("train", views.TrainView, "train"),
    ("is_training", views.IsTrainingView, "is-training"),
]
# Every route twice: under the plain URL and under the secret URL (see views.py).
PREFIXES = [
    ("ml/<str:backend_id>/", "labelstudio"),
    ("ml/<str:backend_id>/s/<str:secret>/", "labelstudio-secret"),
]
gateway_urlpatterns = [
    path(prefix + route, view.as_view(), name=f"{name}-{suffix}")
    for prefix, name in PREFIXES
    for route, view, suffix in ROUTES
] + [
    # Last: any other path under a backend answers a JSON 404, not Django's HTML page.
    re_path(r"^ml/(?P<backend_id>[^/]+)(?:/.*)?$", views.UnknownRouteView.as_view()),
]
