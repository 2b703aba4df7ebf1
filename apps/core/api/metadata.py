"""OPTIONS answers of every API view: what the route accepts, never a lookup of an object.

DRF's `SimpleMetadata` calls `get_object()` for PUT (with the generic `pk` kwarg most of our
routes do not have) and `get_serializer()` on views that declare no serializer (they validate
with serializers of their own), and both raised 500s. This one describes the body of a write
method only when the view declares its serializer, and never touches the database for it.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.metadata import SimpleMetadata
from rest_framework.request import clone_request

from apps.core.exceptions import OrchardError

_WRITE_METHODS = ("PUT", "POST", "PATCH")


def declared_serializer_class(view):
    """The view's serializer class, or None when it declares none (or is no generic view)."""
    if not hasattr(view, "get_serializer_class"):
        return None
    try:
        return view.get_serializer_class()
    except AssertionError:  # GenericAPIView's "should include a `serializer_class`"
        return None


class RouteMetadata(SimpleMetadata):
    def determine_actions(self, request, view):
        actions = {}
        if declared_serializer_class(view) is None:
            return actions
        for method in _WRITE_METHODS:
            if method not in view.allowed_methods:
                continue
            view.request = clone_request(request, method)
            try:
                view.check_permissions(view.request)
                actions[method] = self.get_serializer_info(view.get_serializer())
            except (exceptions.APIException, PermissionDenied, Http404, OrchardError):
                pass
            finally:
                view.request = request
        return actions
