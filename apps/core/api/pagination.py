"""Page-number pagination with a capped page size, answering `{items, page, page_size, total}`."""

import math

from django.conf import settings
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

from apps.core.exceptions import ValidationFailed


def _positive_int(request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # ASCII digits only: int() would also take " 7", "+7", "7_0" and other scripts' digits.
    # Past 100 digits, no page or size can exist (int() itself would refuse 4,300 digits).
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 100:
        raise ValidationFailed.for_field(name, "must be a positive integer.")
    value = int(raw)
    if value < 1:
        raise ValidationFailed.for_field(name, "must be a positive integer.")
    return value


class PagePagination(BasePagination):
    """`page` (from 1) and `page_size` (capped at PAGE_SIZE_MAX); a page past the end is empty.

    Two queries per list whatever the page size: one COUNT and one slice.
    """

    def paginate_queryset(self, queryset, request, view=None):
        self.page = _positive_int(request, "page", 1)
        self.page_size = min(
            _positive_int(request, "page_size", settings.PAGE_SIZE_DEFAULT),
            settings.PAGE_SIZE_MAX,
        )
        self.total = queryset.count() if hasattr(queryset, "count") else len(queryset)
        start = (self.page - 1) * self.page_size
        if start >= self.total:
            # Past the end: empty, without asking the database for an offset it may not hold
            # (SQLite and PostgreSQL refuse offsets past 64 bits with an error, not an empty page).
            return []
        return list(queryset[start : start + self.page_size])

    def get_paginated_response(self, data):
        return Response(self.paginated_data(data))

    def paginated_data(self, items) -> dict:
        return {
            "items": items,
            "page": self.page,
            "page_size": self.page_size,
            "total": self.total,
            "pages": math.ceil(self.total / self.page_size) if self.page_size else 0,
        }

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["items", "page", "page_size", "total", "pages"],
            "properties": {
                "items": schema,
                "page": {"type": "integer", "example": 1},
                "page_size": {"type": "integer", "example": 50},
                "total": {"type": "integer", "example": 120},
                "pages": {"type": "integer", "example": 3},
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": "page",
                "in": "query",
                "required": False,
                "description": "Page number, from 1; a page past the last one is empty.",
                "schema": {"type": "integer", "minimum": 1, "default": 1},
            },
            {
                "name": "page_size",
                "in": "query",
                "required": False,
                # No `maximum`: a larger size is valid and cut to PAGE_SIZE_MAX (the answer's
                # `page_size` says which was used), not refused.
                "description": f"Items per page; larger values are cut to {settings.PAGE_SIZE_MAX}.",
                "schema": {"type": "integer", "minimum": 1, "default": settings.PAGE_SIZE_DEFAULT},
            },
        ]
