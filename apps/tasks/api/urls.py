from rest_framework.routers import SimpleRouter

from apps.tasks.api import views

router = SimpleRouter(trailing_slash=False)
router.register(r"projects/(?P<project_id>[^/]+)/tasks", views.TaskViewSet, basename="task")
router.register(
    r"projects/(?P<project_id>[^/]+)/results", views.RequestResultViewSet, basename="result"
)

urlpatterns = router.urls
