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

PREFIX = "ml/<str:backend_id>/"
gateway_urlpatterns = [
    path(PREFIX, views.HealthView.as_view(), name="labelstudio-root"),
    path(PREFIX + "health", views.HealthView.as_view(), name="labelstudio-health"),
    path(PREFIX + "setup", views.SetupView.as_view(), name="labelstudio-setup"),
    path(PREFIX + "predict", views.PredictView.as_view(), name="labelstudio-predict"),
    path(PREFIX + "webhook", views.WebhookView.as_view(), name="labelstudio-webhook"),
    path(PREFIX + "versions", views.VersionsView.as_view(), name="labelstudio-versions"),
    path(PREFIX + "metrics", views.MetricsView.as_view(), name="labelstudio-metrics"),
    path(PREFIX + "train", views.TrainView.as_view(), name="labelstudio-train"),
    path(PREFIX + "is_training", views.IsTrainingView.as_view(), name="labelstudio-is-training"),
    # Last: any other path under a backend answers a JSON 404, not Django's HTML page.
    re_path(r"^ml/(?P<backend_id>[^/]+)(?:/.*)?$", views.UnknownRouteView.as_view()),
]
