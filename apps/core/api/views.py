"""Base views of every surface of the main API. Tenancy is enforced here and only here.

`ProjectScopedViewSet` / `ProjectScopedAPIView`: the project comes from the URL (`project_id`),
the caller's membership and role are checked per action in `initial()`, and every queryset is
finished with `visible_to(access)`. Subclasses cannot override the scoping methods (checked in
`__init_subclass__`); they narrow querysets through `safely_filter_queryset`.

`GlobalAPIView` / `GlobalViewSet`: the few routes that are not inside one project (auth, the
project list itself, user administration, system). Each declares why in `tenancy_exempt_reason`.
"""

from __future__ import annotations

from typing import ClassVar

from drf_spectacular.utils import extend_schema
from rest_framework import generics, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS, AllowAny
from rest_framework.views import APIView

from apps.core.api.metadata import RouteMetadata
from apps.core.api.parsers import JSONParser
from apps.core.exceptions import NotFound, ValidationFailed
from apps.core.tenancy import ProjectAccess, fetch_visible, project_access

_GUARDED = (
    "get_queryset",
    "get_object",
    "initial",
    "get_serializer_context",
    "check_permissions",
    "resolve_access",
)


# The main API's parsers: the settings' defaults, with the JSON parser that refuses NUL characters
# and bodies nested deeper than Python decodes (views with a body of another kind set their own).
MAIN_API_PARSERS = [JSONParser, MultiPartParser, FormParser]


def refuse_nul_characters(request, kwargs) -> None:
    """No id in the URL and no query value may hold a NUL character: PostgreSQL can neither store
    nor compare one (a DataError, which was a 500), and no object's id has one."""
    if any("\x00" in str(value) for value in kwargs.values()):
        raise NotFound()
    for name, values in request.query_params.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            raise ValidationFailed.for_field(
                name.replace("\x00", ""), "NUL characters are not allowed."
            )


class ProjectScopedMixin:
    """Resolves `self.access` (a ProjectAccess) and scopes every queryset to it."""

    project_url_kwarg: ClassVar[str] = "project_id"
    # "url": the project is the `project_url_kwarg` of the route (the main API).
    # "token": the project is the JWT's `project_id` claim (the Hanami gateway, whose routes name
    # no project; the SDK switches projects by renewing its token).
    project_source: ClassVar[str] = "url"
    # With project_source "token": a resolver (user=, project_id=) -> ProjectAccess built on
    # project_access, for gateways whose protocol defines what a stale token project means.
    token_project_access: ClassVar = None
    # Actions (viewset action names or HTTP methods) that need a project admin.
    admin_actions: ClassVar[frozenset[str]] = frozenset()
    # Actions that only read, even if sent with POST (e.g. a "preview").
    read_actions: ClassVar[frozenset[str]] = frozenset()
    access: ProjectAccess
    # OPTIONS describes the route without looking up an object (DRF's default calls get_object).
    metadata_class = RouteMetadata
    parser_classes: ClassVar[list] = MAIN_API_PARSERS

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("apps.core."):
            return
        for name in _GUARDED:
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__qualname__} overrides {name}(), which enforces tenancy; "
                    "use safely_filter_queryset() instead."
                )

    # -- the hooks subclasses may use --------------------------------------------------------
    def safely_filter_queryset(self, queryset):
        """Narrow the already-scoped queryset (filters, select_related, ordering)."""
        return queryset

    # -- enforcement --------------------------------------------------------------------------
    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        refuse_nul_characters(request, kwargs)
        self.access = self.resolve_access(request, kwargs)
        action = getattr(self, "action", None) or request.method.lower()
        if action in self.admin_actions or request.method.lower() in self.admin_actions:
            self.access.require_admin()
        elif request.method not in SAFE_METHODS and action not in self.read_actions:
            self.access.require_write()

    def resolve_access(self, request, kwargs) -> ProjectAccess:
        if self.project_source == "token":
            token = request.auth
            project_id = token.get("project_id") if token is not None else None
            resolver = type(self).token_project_access or project_access
            return resolver(user=request.user, project_id=project_id)
        project_id = kwargs.get(self.project_url_kwarg)
        return project_access(user=request.user, project_id=project_id)

    def get_queryset(self):
        base = self.queryset
        if base is None:
            raise RuntimeError(f"{type(self).__name__} needs a `queryset`.")
        return self.safely_filter_queryset(base.model.objects.visible_to(self.access))

    def get_object(self):
        queryset = self.filter_queryset(self.get_queryset())
        lookup_url_kwarg = self.lookup_url_kwarg or self.lookup_field
        # The queryset is already `visible_to(access)` and narrowed by the view (annotations,
        # ordering), so the one fetch runs on it rather than on a fresh `get_visible`.
        return fetch_visible(
            queryset,
            self.access,
            for_edit=self.request.method not in SAFE_METHODS,
            **{self.lookup_field: self.kwargs[lookup_url_kwarg]},
        )

    def get_serializer_context(self):
        context = super().get_serializer_context()
        access = getattr(self, "access", None)
        context["access"] = access
        context["project"] = access.project if access else None
        return context


class ProjectScopedViewSet(ProjectScopedMixin, viewsets.GenericViewSet):
    """Base of every viewset over tenant-owned rows."""


class ProjectScopedAPIView(ProjectScopedMixin, generics.GenericAPIView):
    """Base of every non-viewset route inside a project (studio paths like /api/datasets/{id})."""


class GlobalMixin:
    """Marks a route that is not inside one project; the reason is required and reviewed."""

    tenancy_exempt_reason: ClassVar[str] = ""
    metadata_class = RouteMetadata
    parser_classes: ClassVar[list] = MAIN_API_PARSERS

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        refuse_nul_characters(request, kwargs)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__module__.startswith("apps.core.") and not cls.tenancy_exempt_reason:
            raise TypeError(
                f"{cls.__qualname__} must say why it is global (tenancy_exempt_reason)."
            )


class GlobalAPIView(GlobalMixin, APIView):
    pass


class GlobalViewSet(GlobalMixin, viewsets.GenericViewSet):
    pass


@extend_schema(exclude=True)
class UnknownRouteView(GlobalAPIView):
    """Any other path under /api/: 404 in the main API's envelope (never Django's HTML page),
    whatever the method, before authentication (an unknown route has nothing to protect)."""

    tenancy_exempt_reason = "answers 404 for unknown /api/ paths; reads and writes nothing"
    authentication_classes: ClassVar[list] = []
    permission_classes: ClassVar[list] = [AllowAny]
    throttle_classes: ClassVar[list] = []

    def _missing(self, request, *args, **kwargs):
        raise NotFound(f"No API route at {request.path}.")

    get = post = put = patch = delete = head = options = _missing
