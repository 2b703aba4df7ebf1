from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.accounts.api import views

router = SimpleRouter(trailing_slash=False)
router.register("projects", views.ProjectViewSet, basename="project")
router.register("users", views.UserViewSet, basename="user")
router.register(
    r"projects/(?P<project_id>[^/]+)/members", views.MembershipViewSet, basename="member"
)

urlpatterns = [
    path("auth/token", views.TokenObtainView.as_view(), name="token-obtain"),
    path("auth/token/refresh", views.TokenRefreshView.as_view(), name="token-refresh"),
    path("auth/logout", views.LogoutView.as_view(), name="logout"),
    path("auth/switch", views.ProjectSwitchView.as_view(), name="project-switch"),
    path("auth/me", views.MeView.as_view(), name="me"),
    *router.urls,
]
