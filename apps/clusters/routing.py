from django.urls import re_path

from apps.clusters.consumers import ClusterIoConsumer

websocket_urlpatterns: list = [
    re_path(
        r"^ws/projects/(?P<project_id>[^/]+)/clusters/(?P<cluster_id>[^/]+)/io$",
        ClusterIoConsumer.as_asgi(),
    ),
]
