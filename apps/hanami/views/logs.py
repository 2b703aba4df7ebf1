"""The audit log (every request) and the error log (server errors), like upstream Hanami."""

from __future__ import annotations

from typing import ClassVar

from rest_framework.response import Response

from apps.hanami import selectors
from apps.hanami.answers import table, timestamp
from apps.hanami.models import AuditEntry, ErrorEntry
from apps.hanami.serializers import LogQuery, validated
from apps.hanami.views.base import HanamiGlobalView


class _LogView(HanamiGlobalView):
    """GET [user_id, page]: admins read anyone's log, others only their own."""

    tenancy_exempt_reason = "logs are per user: global admins read all, users their own"
    header: ClassVar[list[str]]

    def get(self, request):
        query = {
            "user_id": request.query_params.get("user_id") or request.user.username,
            "page": request.query_params.get("page", "0"),
        }
        data = validated(LogQuery, query, user=request.user)
        entries = selectors.log_page(model=self.model, user_id=data["user_id"], page=data["page"])
        return Response(table(self.header, [self.row(e, data["user_id"]) for e in entries]))


class AuditLogView(_LogView):
    model = AuditEntry
    header: ClassVar = ["timestamp", "user_id", "endpoint", "request_type"]

    @staticmethod
    def row(entry, user_id):
        return (timestamp(entry.created_at), user_id, entry.endpoint, entry.request_type)


class ErrorLogView(_LogView):
    model = ErrorEntry
    header: ClassVar = ["timestamp", "user_id", "component", "context", "values"]

    @staticmethod
    def row(entry, user_id):
        return (timestamp(entry.created_at), user_id, entry.component, entry.context, entry.values)
