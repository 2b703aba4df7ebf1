"""The Hanami websocket: path `/` (the SDK connects to `ws://HOST:PORT` with no path)."""

from django.urls import path

from apps.hanami.consumers import HanamiSocketConsumer

websocket_urlpatterns: list = [path("", HanamiSocketConsumer.as_asgi())]
