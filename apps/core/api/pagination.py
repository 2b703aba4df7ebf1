"""Page-number pagination with a capped page size, answering `{items, page, page_size, total}`."""

import math

from django.conf import settings
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

from apps.core.exceptions import ValidationFailed


def _positive_int(request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValidationFailed.for_field(name, "must be a positive integer.") from None
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
                "schema": {"type": "integer", "minimum": 1, "default": 1},
            },
            {
                "name": "page_size",
                "in": "query",
                "required": False,
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": settings.PAGE_SIZE_MAX,
                    "default": settings.PAGE_SIZE_DEFAULT,
                },
            },
        ]
