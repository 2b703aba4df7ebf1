"""Tokens, users, projects and memberships."""

from __future__ import annotations

from typing import ClassVar

from django.contrib.auth import authenticate
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from apps.accounts import services as accounts
from apps.accounts.selectors import project_get_for, user_get
from apps.core.exceptions import Unauthorized
from apps.core.tenancy import project_access
from apps.core.throttling import ScopedRateThrottle, account_key, credential_attempt
from apps.hanami import selectors
from apps.hanami.access import require_global_admin
from apps.hanami.answers import (
    membership_answers,
    project_answer,
    table,
    token_answer,
    user_answer,
)
from apps.hanami.serializers import (
    LoginInput,
    MembershipFlagInput,
    MembershipInput,
    MembershipQuery,
    ProjectCreateInput,
    ProjectQuery,
    ProjectSwitchInput,
    UserCreateInput,
    UserQuery,
    json_object,
    validated,
)
from apps.hanami.views.base import HanamiGlobalView


def _user_answer(user) -> dict:
    return user_answer(user, selectors.user_memberships(user))


class TokenView(HanamiGlobalView):
    """POST {id, password} -> token; PUT {project_id} -> a token for another project."""

    tenancy_exempt_reason = "login and token renewal happen before a project is chosen"
    permission_classes: ClassVar[list] = [AllowAny]
    throttle_scope = "login"

    def get_authenticators(self):
        if self.request is not None and self.request.method == "POST":
            return []
        return super().get_authenticators()

    def get_throttles(self):
        if self.request is not None and self.request.method == "POST":
            return [ScopedRateThrottle()]
        return []

    def post(self, request):
        data = validated(LoginInput, request.data)
        with credential_attempt(request, account=account_key(data["id"])) as attempt:
            user = authenticate(request, username=data["id"], password=data["password"])
            if user is None:
                raise Unauthorized("Invalid user id or password.")
            attempt.succeeded()
        return Response(token_answer(user))

    def put(self, request):
        if not request.user or not request.user.is_authenticated:
            raise Unauthorized("Missing token.")
        project_id = validated(ProjectSwitchInput, request.data)["project_id"]
        project = project_access(user=request.user, project_id=project_id).project
        return Response(token_answer(request.user, project))


class UserView(HanamiGlobalView):
    tenancy_exempt_reason = "user administration is global (global admins only)"

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        require_global_admin(request.user)

    def post(self, request):
        data = validated(UserCreateInput, request.data)
        user = accounts.user_create(
            username=data["id"],
            password=data["password"],
            name=data["name"],
            is_admin=data["is_admin"],
        )
        return Response(_user_answer(user))

    def get(self, request):
        user_id = validated(UserQuery, request.query_params)["id"]
        return Response(_user_answer(user_get(username=user_id)))

    def delete(self, request):
        user_id = validated(UserQuery, request.query_params)["id"]
        accounts.user_delete(user=user_get(username=user_id), actor=request.user)
        return Response({})


class UserListView(UserView):
    def get(self, request):
        answers = (user_answer(user, memberships) for user, memberships in selectors.user_list())
        rows = [
            (u["id"], u["name"], u["creator_id"], u["projects"], u["is_admin"]) for u in answers
        ]
        return Response(table(["id", "name", "creator_id", "projects", "is_admin"], rows))


class UserProjectView(HanamiGlobalView):
    """Memberships: admins add/remove; everyone lists their own and switches project."""

    tenancy_exempt_reason = (
        "memberships are managed by global admins; listing shows only the caller's"
    )

    def get(self, request):
        projects = membership_answers(selectors.user_memberships(request.user))
        rows = [(p["project_id"], p["role"], p["is_project_admin"]) for p in projects]
        return Response(table(["project_id", "role", "is_project_admin"], rows))

    def post(self, request):
        data = json_object(request.data)
        if set(data) == {"project_id"}:
            # The SDK's switch_project posts here; same as PUT token.
            project_id = validated(ProjectSwitchInput, data)["project_id"]
            project = project_access(user=request.user, project_id=project_id).project
            return Response(token_answer(request.user, project))
        require_global_admin(request.user)
        wanted = validated(MembershipInput, data)
        user = user_get(username=wanted["id"])
        project = project_get_for(user=request.user, project_id=wanted["project_id"])
        accounts.membership_add(
            project=project,
            user=user,
            role=wanted["role"],
            is_project_admin=validated(MembershipFlagInput, data)["is_project_admin"],
        )
        return Response(_user_answer(user))

    def delete(self, request):
        require_global_admin(request.user)
        data = validated(MembershipQuery, request.query_params)
        user = user_get(username=data["id"])
        project = project_get_for(user=request.user, project_id=data["project_id"])
        accounts.membership_remove(project=project, user=user)
        return Response(_user_answer(user))


class ProjectView(HanamiGlobalView):
    tenancy_exempt_reason = "project administration is global (global admins only)"

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        require_global_admin(request.user)

    def post(self, request):
        data = validated(ProjectCreateInput, request.data)
        project = accounts.project_create(
            actor=request.user, name=data["name"], project_id=data["id"]
        )
        return Response(project_answer(project))

    def get(self, request):
        project_id = validated(ProjectQuery, request.query_params)["id"]
        return Response(project_answer(project_get_for(user=request.user, project_id=project_id)))

    def delete(self, request):
        project_id = validated(ProjectQuery, request.query_params)["id"]
        accounts.project_delete(project=project_get_for(user=request.user, project_id=project_id))
        return Response({})


class ProjectListView(ProjectView):
    def get(self, request):
        rows = [
            (p["id"], p["name"], p["creator_id"])
            for p in map(project_answer, selectors.project_list())
        ]
        return Response(table(["id", "name", "creator_id"], rows))
