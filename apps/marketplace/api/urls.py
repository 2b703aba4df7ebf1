from django.urls import re_path
from rest_framework.routers import SimpleRouter

from apps.marketplace.api import views

router = SimpleRouter(trailing_slash=False)
_PREFIX = r"marketplace/(?P<project_id>[^/]+)"
router.register(_PREFIX + "/problems", views.ProblemViewSet, basename="marketplace-problem")
router.register(_PREFIX + "/algos", views.AlgoViewSet, basename="marketplace-algo")
router.register(_PREFIX + "/data", views.DataViewSet, basename="marketplace-data")
router.register(
    _PREFIX + "/learnuplets", views.LearnupletViewSet, basename="marketplace-learnuplet"
)
router.register(_PREFIX + "/preduplets", views.PredupletViewSet, basename="marketplace-preduplet")
router.register(_PREFIX + "/pushes", views.ComputePushViewSet, basename="marketplace-push")

urlpatterns = [
    re_path(
        r"^" + _PREFIX + r"/compute$",
        views.ComputeEndpointView.as_view(),
        name="marketplace-compute",
    ),
    *router.urls,
]
