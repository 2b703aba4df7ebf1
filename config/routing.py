"""Websocket routes of every app, collected in one list (order matters: the Hanami socket on
path `/` comes last)."""

from importlib import import_module

WEBSOCKET_APPS = ["tasks", "training", "clusters", "datasets", "mlbackend", "marketplace", "hanami"]

websocket_urlpatterns: list = []
for _app in WEBSOCKET_APPS:
    websocket_urlpatterns += import_module(f"apps.{_app}.routing").websocket_urlpatterns
