"""Websocket routes of the apps that have sockets, collected in one list (order matters: the Hanami socket on
path `/` comes last)."""

from importlib import import_module

WEBSOCKET_APPS = ["tasks", "clusters", "hanami"]

websocket_urlpatterns: list = []
for _app in WEBSOCKET_APPS:
    websocket_urlpatterns += import_module(f"apps.{_app}.routing").websocket_urlpatterns
