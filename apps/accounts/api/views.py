"""Auth, projects, users and memberships of the main API."""

from django.conf import settings
from django.contrib.auth import authenticate
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status
from rest_framework.exceptions import NotFound as DRFNotFound
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenRefreshSerializer
from rest_framework_simplejwt.tokens import RefreshToken

from apps.accounts import selectors, services
from apps.accounts.api import serializers as s
from apps.accounts.models import Membership, Project, User
from apps.core.api.pagination import PagePagination
from apps.core.api.views import GlobalAPIView, GlobalViewSet, ProjectScopedViewSet
from apps.core.exceptions import Forbidden, Unauthorized
from apps.core.tenancy import project_access
from apps.core.throttling import ScopedRateThrottle, account_key, credential_attempt


class IsGlobalAdmin(IsAuthenticated):
    def has_permission(self, request, view):
        return super().has_permission(request, view) and request.user.is_superuser


class TokenObtainView(GlobalAPIView):
    """Log in with username and password; returns a JWT pair scoped to a project."""

    tenancy_exempt_reason = "login happens before any project is known"
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "login"

    @extend_schema(request=s.TokenObtainSerializer, responses=s.TokenPairSerializer, auth=[])
    def post(self, request):
        data = s.TokenObtainSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data["username"]
        with credential_attempt(request, account=account_key(username)) as attempt:
            user = authenticate(
                request, username=username, password=data.validated_data["password"]
            )
            if user is None:
                raise Unauthorized("Invalid username or password.")
            attempt.succeeded()
        project = None
        if data.validated_data.get("project_id"):
            project = project_access(
                user=user, project_id=data.validated_data["project_id"]
            ).project
        pair = services.token_pair_for(user=user, project=project)
        return Response({**pair, "user": s.UserSerializer(user).data})


class TokenRefreshView(GlobalAPIView):
    """Exchange a refresh token for a new pair; the old refresh token is blacklisted."""

    tenancy_exempt_reason = "the refresh token carries its own scope"
    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(request=s.RefreshSerializer, responses=s.TokenPairSerializer, auth=[])
    def post(self, request):
        s.RefreshSerializer(data=request.data).is_valid(raise_exception=True)
        serializer = TokenRefreshSerializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except TokenError as exc:
            raise InvalidToken(str(exc)) from exc
        data = serializer.validated_data
        project_id = RefreshToken(data["refresh"]).get("project_id")
        return Response(
            {"access": data["access"], "refresh": data["refresh"], "project_id": project_id}
        )


class LogoutView(GlobalAPIView):
    """Blacklist a refresh token so it can no longer be used."""

    tenancy_exempt_reason = "acts on the caller's own token"

    @extend_schema(request=s.RefreshSerializer, responses={204: None})
    def post(self, request):
        data = s.RefreshSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            token = RefreshToken(data.validated_data["refresh"])
            if str(token.get("user_id")) != str(request.user.pk):
                raise InvalidToken("Not your token.")
            token.blacklist()
        except TokenError as exc:
            raise InvalidToken(str(exc)) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProjectSwitchView(GlobalAPIView):
    """Issue a token pair scoped to another of the caller's projects."""

    tenancy_exempt_reason = "checks membership of the target project itself"

    @extend_schema(request=s.ProjectSwitchSerializer, responses=s.TokenPairSerializer)
    def post(self, request):
        data = s.ProjectSwitchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        access = project_access(user=request.user, project_id=data.validated_data["project_id"])
        return Response(services.token_pair_for(user=request.user, project=access.project))


class MeView(GlobalAPIView):
    """The caller's account and projects."""

    tenancy_exempt_reason = "the caller's own account"

    @extend_schema(responses=s.UserSerializer)
    def get(self, request):
        return Response(s.UserSerializer(request.user).data)


# Query parameters that ask for Orchard's page object instead of the plan's plain list.
_PAGE_PARAMS = ("page", "page_size", "cursor", "count")


_PROJECT_ITEMS = {"type": "array", "items": {"$ref": "#/components/schemas/Project"}}
# The plan's plain list, or Orchard's page object when a page parameter is given.
_PLAIN_OR_PAGED_PROJECTS = {
    "oneOf": [_PROJECT_ITEMS, PagePagination().get_paginated_response_schema(_PROJECT_ITEMS)]
}


class _ProjectSchema(AutoSchema):
    """The list's answer is described whole above (not wrapped as one page object)."""

    def _is_list_view(self, serializer=None) -> bool:
        if getattr(self.view, "action", None) == "list":
            return False
        return super()._is_list_view(serializer)


class ProjectViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    GlobalViewSet,
):
    """Projects (the tenants): listed by membership; changed by project or global admins."""

    tenancy_exempt_reason = "the project list itself; every lookup is limited by membership"
    serializer_class = s.ProjectSerializer
    schema = _ProjectSchema()
    lookup_url_kwarg = "project_id"
    # No PUT (a project is changed with PATCH); HEAD and OPTIONS as on every other route.
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    queryset = Project.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Project.objects.none()
        return selectors.project_list_for(user=self.request.user).order_by("-created_at")

    def get_object(self):
        return project_access(user=self.request.user, project_id=self.kwargs["project_id"]).project

    @extend_schema(
        operation_id="projects_list",
        parameters=[
            OpenApiParameter("page", int, description="Page number, from 1: the page object."),
            OpenApiParameter("page_size", int, description="Items per page: the page object."),
            OpenApiParameter("count", bool, description="false: skip the COUNT (page object)."),
            OpenApiParameter(
                "cursor", str, description="A next_cursor: the page after it (page object)."
            ),
        ],
        responses={200: _PLAIN_OR_PAGED_PROJECTS},
        description="The plan answers the list itself (newest first, at most PAGE_SIZE_MAX; "
        "`X-Total-Count` says how many exist and `Link` names the next page). With `page`, "
        "`page_size`, `cursor` or `count` the answer is Orchard's page object instead.",
    )
    def list(self, request):
        queryset = self.get_queryset()
        if any(name in request.query_params for name in _PAGE_PARAMS):
            page = self.paginate_queryset(queryset)
            return self.get_paginated_response(s.ProjectSerializer(page, many=True).data)
        limit = settings.PAGE_SIZE_MAX
        rows = list(queryset[: limit + 1])
        response = Response(s.ProjectSerializer(rows[:limit], many=True).data)
        response["X-Total-Count"] = str(queryset.count() if len(rows) > limit else len(rows))
        if len(rows) > limit:
            response["Link"] = f'</api/projects?page=2&page_size={limit}>; rel="next"'
        return response

    @extend_schema(request=s.ProjectSerializer, responses={200: s.ProjectSerializer})
    def create(self, request):
        """The plan answers a create with 200 and the envelope (not 201)."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        return Response(serializer.data)

    def perform_create(self, serializer):
        if self.request.user.is_service_account:
            raise Forbidden("Service accounts cannot create projects.")
        serializer.instance = services.project_create(
            actor=self.request.user, **serializer.validated_data
        )

    @extend_schema(request=s.ProjectUpdateSerializer, responses=s.ProjectSerializer)
    def partial_update(self, request, project_id=None):
        access = project_access(user=request.user, project_id=project_id)
        access.require_admin()
        data = s.ProjectUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = services.project_update(project=access.project, **data.validated_data)
        return Response(s.ProjectSerializer(project).data)

    @extend_schema(
        responses={
            200: inline_serializer(
                "ProjectDeleted",
                {"id": serializers.CharField(), "deleted": serializers.BooleanField()},
            )
        }
    )
    def destroy(self, request, project_id=None):
        access = project_access(user=request.user, project_id=project_id)
        access.require_admin()
        services.project_delete(project=access.project)
        return Response({"id": project_id, "deleted": True})  # the plan: 200 with the envelope


class UserViewSet(GlobalViewSet):
    """User administration, for global admins."""

    tenancy_exempt_reason = "users are global; only global admins reach these routes"
    permission_classes = [IsGlobalAdmin]
    serializer_class = s.UserSerializer
    queryset = User.objects.all()
    lookup_field = "username"
    lookup_value_regex = r"[^/]+"

    def list(self, request):
        page = self.paginate_queryset(User.objects.order_by("username"))
        return self.get_paginated_response(s.UserSerializer(page, many=True).data)

    @extend_schema(request=s.UserCreateSerializer, responses={201: s.UserSerializer})
    def create(self, request):
        data = s.UserCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_create(**data.validated_data)
        return Response(s.UserSerializer(user).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, username=None):
        return Response(s.UserSerializer(selectors.user_get(username=username)).data)

    @extend_schema(request=s.UserUpdateSerializer, responses=s.UserSerializer)
    def partial_update(self, request, username=None):
        user = selectors.user_get(username=username)
        data = s.UserUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_update(user=user, **data.validated_data)
        return Response(s.UserSerializer(user).data)

    def destroy(self, request, username=None):
        services.user_delete(user=selectors.user_get(username=username), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MembershipViewSet(ProjectScopedViewSet):
    """Members of a project; project admins add, change and remove them."""

    queryset = Membership.objects.all()
    serializer_class = s.MembershipSerializer
    lookup_field = "user__username"
    lookup_url_kwarg = "username"
    lookup_value_regex = r"[^/]+"
    admin_actions = frozenset({"create", "partial_update", "destroy"})

    def safely_filter_queryset(self, queryset):
        return queryset.select_related("user").order_by("user__username")

    def list(self, request, project_id=None):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=s.MembershipWriteSerializer, responses={201: s.MembershipSerializer})
    def create(self, request, project_id=None):
        data = s.MembershipWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            user = selectors.user_get(username=data.validated_data.pop("username"))
        except Exception:
            raise DRFNotFound("User not found.") from None
        membership = services.membership_add(
            project=self.access.project, user=user, **data.validated_data
        )
        return Response(self.get_serializer(membership).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, project_id=None, username=None):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(request=s.MembershipUpdateSerializer, responses=s.MembershipSerializer)
    def partial_update(self, request, project_id=None, username=None):
        membership = self.get_object()
        data = s.MembershipUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_set(
            project=self.access.project,
            user=membership.user,
            role=data.validated_data.get("role", membership.role),
            is_project_admin=data.validated_data.get(
                "is_project_admin", membership.is_project_admin
            ),
        )
        return Response(self.get_serializer(membership).data)

    def destroy(self, request, project_id=None, username=None):
        membership = self.get_object()
        services.membership_remove(project=self.access.project, user=membership.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
