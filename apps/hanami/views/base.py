"""The two bases of every gateway route: the protocol's wire format and tenancy."""

from __future__ import annotations

from typing import ClassVar

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny

from apps.core.api.protocol import AnyJSONParser, JSONOnlyNegotiation, PlainJSONRenderer
from apps.core.api.views import GlobalAPIView, ProjectScopedAPIView
from apps.core.exceptions import NotFound
from apps.datasets.models import Dataset
from apps.hanami.access import hanami_project_access
from apps.hanami.authentication import HanamiTokenAuthentication
from apps.hanami.http import hanami_exception_handler
from apps.hanami.logs import audit_record


class HanamiMixin:
    """JSON in whatever the Content-Type, plain JSON out, the raw token, Hanami's errors, and an
    audit log entry per request."""

    authentication_classes: ClassVar[list] = [HanamiTokenAuthentication]
    parser_classes: ClassVar[list] = [AnyJSONParser]
    renderer_classes: ClassVar[list] = [PlainJSONRenderer]
    content_negotiation_class = JSONOnlyNegotiation
    pagination_class = None
    filter_backends: ClassVar[list] = []

    def get_exception_handler(self):
        return hanami_exception_handler

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        audit_record(request, response.status_code)
        return response


@extend_schema(exclude=True)
class HanamiGlobalView(HanamiMixin, GlobalAPIView):
    """A gateway route outside any one project (tokens, users, projects)."""

    tenancy_exempt_reason = "Hanami user/project administration and tokens (global admin or self)"


@extend_schema(exclude=True)
class UnknownRouteView(HanamiGlobalView):
    """Any other path under /control/: 404 with Hanami's `{"error": ...}` (never an HTML page),
    whatever the method; no token needed to learn that a route does not exist."""

    authentication_classes: ClassVar[list] = []
    permission_classes: ClassVar[list] = [AllowAny]

    def _missing(self, request, *args, **kwargs):
        raise NotFound(f"Unknown endpoint: {request.path}")

    get = post = put = patch = delete = head = options = _missing


@extend_schema(exclude=True)
class HanamiView(HanamiMixin, ProjectScopedAPIView):
    """A gateway route inside the token's project."""

    project_source = "token"
    token_project_access = staticmethod(hanami_project_access)
    queryset = Dataset.objects.all()
