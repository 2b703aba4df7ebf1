from django.urls import path

from apps.system.api import views

urlpatterns = [
    path("system/health", views.HealthView.as_view(), name="system-health"),
    path("system/devices", views.DevicesView.as_view(), name="system-devices"),
    path("system/workspace", views.WorkspaceView.as_view(), name="system-workspace"),
]
