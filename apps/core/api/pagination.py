"""List pagination: pages with a capped size, optional counts, and keyset cursors for deep lists.

Answers `{items, page, page_size, total, pages, next_cursor}`:
- `?page=N&page_size=M` (the default): an offset page. `total`/`pages` come from one COUNT, which
  grows with the table (53 ms at 100k rows); `?count=false` skips it (`total`/`pages` null) and
  reads one row more to know whether there is a next page.
- `?cursor=<next_cursor>`: a keyset page, the rows after the previous page's last one in the
  list's order (the cursor names that row; its ordering values are read back by primary key). Its cost does not grow with the depth (an offset of 99k cost 247 ms) and rows added
  meanwhile shift nothing. No COUNT (`page`, `total`, `pages` null).
`next_cursor` is given on every answer whose list has a plain field ordering (null on the last
page), so a client can walk a whole table at constant cost per page.
"""

from __future__ import annotations

import base64
import binascii
import math

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db.models import Q
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

from apps.core.exceptions import ValidationFailed

CURSOR_MAX_CHARS = 128  # base64url of a primary key


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


def _boolean(request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValidationFailed.for_field(name, "must be true or false.")


def keyset_ordering(queryset) -> list[tuple[str, bool]] | None:
    """The list's order as (concrete field name, descending) with the primary key last as the
    tie-breaker, or None when it is not a plain field ordering (expressions, relations, random)."""
    meta = queryset.model._meta
    order = list(queryset.query.order_by) or list(meta.ordering or [])
    fields: list[tuple[str, bool]] = []
    for item in order:
        if not isinstance(item, str) or item == "?" or "__" in item:
            return None
        descending, name = item.startswith("-"), item.lstrip("-+")
        if name == "pk":
            name = meta.pk.name
        try:
            field = meta.get_field(name)
        except FieldDoesNotExist:
            return None
        if not getattr(field, "concrete", False) or field.null or field.is_relation:
            return None
        fields.append((field.attname, descending))
    if meta.pk.attname not in {name for name, _ in fields}:
        fields.append((meta.pk.attname, fields[-1][1] if fields else False))
    return fields


def _encode_cursor(queryset, fields, row) -> str:
    """The last row's primary key, opaque: short whatever the ordering (URLs stay small)."""
    return base64.urlsafe_b64encode(str(row.pk).encode()).decode().rstrip("=")


def _decode_cursor(queryset, fields, cursor: str) -> list:
    """The ordering values of the row a cursor names, read from the list itself (so a cursor
    can only point inside what the caller may list); invalid when that row is gone."""
    invalid = ValidationFailed.for_field(
        "cursor", "is not a cursor this list gave out (or its row is gone: start again)."
    )
    if len(cursor) > CURSOR_MAX_CHARS or not cursor.isascii():
        raise invalid
    try:
        pk = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        row = queryset.filter(pk=pk).values(*[name for name, _ in fields]).first()
    except (binascii.Error, UnicodeDecodeError, ValueError, ValidationError, TypeError):
        raise invalid from None
    if row is None:
        raise invalid
    return [row[name] for name, _ in fields]


def _after(fields, values) -> Q:
    """Rows strictly after `values` in the (mixed-direction) lexicographic order of `fields`."""
    condition = Q()
    for i, (name, descending) in enumerate(fields):
        step = Q(**{f"{name}__{'lt' if descending else 'gt'}": values[i]})
        for j, (prior, _descending) in enumerate(fields[:i]):
            step &= Q(**{prior: values[j]})
        condition |= step
    return condition


class PagePagination(BasePagination):
    """`page` (from 1) and `page_size` (capped at PAGE_SIZE_MAX); a page past the end is empty;
    `count=false` skips the COUNT; `cursor` reads a keyset page (see the module docstring).

    At most two queries per list whatever the page size: the COUNT (page mode) and the slice.
    """

    def paginate_queryset(self, queryset, request, view=None):
        self.page_size = min(
            _positive_int(request, "page_size", settings.PAGE_SIZE_DEFAULT),
            settings.PAGE_SIZE_MAX,
        )
        self.page, self.total, self.next_cursor = None, None, None
        cursor = request.query_params.get("cursor")
        fields = keyset_ordering(queryset) if hasattr(queryset, "query") else None
        if fields is not None:
            queryset = queryset.order_by(*[("-" if d else "") + name for name, d in fields])
        if cursor is not None:
            if fields is None:
                raise ValidationFailed.for_field("cursor", "this list has no cursor pagination.")
            queryset = queryset.filter(_after(fields, _decode_cursor(queryset, fields, cursor)))
            return self._slice(queryset, fields, 0, more_known=None)
        self.page = _positive_int(request, "page", 1)
        start = (self.page - 1) * self.page_size
        if _boolean(request, "count", True):
            self.total = queryset.count() if hasattr(queryset, "count") else len(queryset)
            if start >= self.total:
                # Past the end: empty, without asking the database for an offset it may not hold
                # (SQLite and PostgreSQL refuse offsets past 64 bits with an error).
                return []
            return self._slice(
                queryset, fields, start, more_known=start + self.page_size < self.total
            )
        if start > 2**62:
            return []
        return self._slice(queryset, fields, start, more_known=None)

    def _slice(self, queryset, fields, start: int, *, more_known: bool | None) -> list:
        extra = 0 if more_known is not None else 1  # one row more tells whether a next exists
        rows = list(queryset[start : start + self.page_size + extra])
        more = more_known if more_known is not None else len(rows) > self.page_size
        rows = rows[: self.page_size]
        if more and rows and fields is not None:
            self.next_cursor = _encode_cursor(queryset, fields, rows[-1])
        return rows

    def get_paginated_response(self, data):
        return Response(self.paginated_data(data))

    def paginated_data(self, items) -> dict:
        pages = None
        if self.total is not None:
            pages = math.ceil(self.total / self.page_size) if self.page_size else 0
        return {
            "items": items,
            "page": self.page,
            "page_size": self.page_size,
            "total": self.total,
            "pages": pages,
            "next_cursor": self.next_cursor,
        }

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["items", "page", "page_size", "total", "pages", "next_cursor"],
            "properties": {
                "items": schema,
                "page": {"type": "integer", "nullable": True, "example": 1},
                "page_size": {"type": "integer", "example": 50},
                "total": {
                    "type": "integer",
                    "nullable": True,
                    "example": 120,
                    "description": "Null with count=false or a cursor.",
                },
                "pages": {"type": "integer", "nullable": True, "example": 3},
                "next_cursor": {
                    "type": "string",
                    "nullable": True,
                    "description": "Pass as `cursor` for the next page at constant cost; "
                    "null on the last page.",
                },
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
            {
                "name": "count",
                "in": "query",
                "required": False,
                "description": "false: skip counting the list (`total` and `pages` are null).",
                "schema": {"type": "boolean", "default": True},
            },
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "A `next_cursor` from an earlier answer: the page after it, at a "
                "cost that does not grow with the depth.",
                "schema": {"type": "string", "maxLength": CURSOR_MAX_CHARS},
            },
        ]
