"""The bench site's routes: Orchard's own (`config.urls`) plus bare baselines served by the same
server process, so a row compares two handlers under the same server, settings and database.

- `GET /bench/bare/projects/<id>/members?page=&page_size=`: what `GET /api/projects/<id>/members`
  does, written as a plain Django view: the Bearer JWT checked with simplejwt and its user read,
  the caller's membership of the project (404 without one), the COUNT and the page of memberships
  with their users in username order, and the same JSON (envelope, page fields, the same item
  fields and datetime format). No DRF, no serializers, no tenancy base class.
- `QueryCountMiddleware`: every answer carries `X-Bench-Queries`, the SQL queries it ran.
"""

import json
import math

from django.contrib.auth import get_user_model
from django.db import connection
from django.http import HttpResponse
from django.urls import include, path
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken


class QueryCountMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        count = 0

        def counted(execute, sql, params, many, context):
            nonlocal count
            count += 1
            return execute(sql, params, many, context)

        with connection.execute_wrapper(counted):
            response = self.get_response(request)
        response["X-Bench-Queries"] = str(count)
        return response


def _json(payload, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type="application/json")


def _error(status: int, message: str) -> HttpResponse:
    return _json({"status": "error", "error": {"message": message}}, status)


def _int(request, name: str, default: int) -> int:
    try:
        return max(1, int(request.GET.get(name, default)))
    except ValueError:
        return default


def bare_members(request, project_id: str):
    from apps.accounts.models import Membership

    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header.startswith("Bearer "):
        return _error(401, "Missing token.")
    try:
        token = AccessToken(header.removeprefix("Bearer ").strip())
        user = get_user_model().objects.get(
            **{jwt_settings.USER_ID_FIELD: token[jwt_settings.USER_ID_CLAIM]}, is_active=True
        )
    except Exception:
        return _error(401, "Token is invalid or expired.")
    member = (
        Membership.objects.select_related("project")
        .filter(project_id=project_id, user=user)
        .first()
    )
    if member is None:
        return _error(404, "Project not found.")
    page_size = min(_int(request, "page_size", 50), 200)
    page = _int(request, "page", 1)
    rows = (
        Membership.objects.filter(project_id=project_id)
        .select_related("user")
        .order_by("user__username")
    )
    total = rows.count()
    start = (page - 1) * page_size
    items = [
        {
            "username": m.user.username,
            "name": m.user.name,
            "role": m.role,
            "is_project_admin": m.is_project_admin,
            "created_at": m.created_at.isoformat().replace("+00:00", "Z"),
        }
        for m in (rows[start : start + page_size] if start < total else [])
    ]
    data = {
        "items": items,
        "page": page,
        "page_size": page_size,
        "total": total,
        "pages": math.ceil(total / page_size),
        "next_cursor": None,  # Orchard encodes a keyset cursor here: its own extra work
    }
    return _json({"status": "ok", "data": data})


urlpatterns = [
    path("bench/bare/projects/<str:project_id>/members", bare_members),
    path("", include("config.urls")),
]
