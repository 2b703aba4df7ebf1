from django.urls import re_path

from apps.tasks.consumers import TaskEventsConsumer

websocket_urlpatterns: list = [
    re_path(
        r"^ws/projects/(?P<project_id>[^/]+)/tasks/(?P<task_id>[^/]+)$",
        TaskEventsConsumer.as_asgi(),
    ),
]
