"""Building blocks of the foreign-protocol gateways (Hanami, Label Studio, the orchestrator):
JSON bodies parsed whatever the Content-Type says (their clients often send none), plain JSON
answers without the studio envelope, and a DRF error detail flattened into one message."""

from __future__ import annotations

import json

from rest_framework import exceptions as drf
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

from apps.core.api.parsers import (
    TOO_DEEP,
    may_hold_unstorable_strings,
    refuse_unstorable_strings,
)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class AnyJSONParser(BaseParser):
    """The body as strict JSON whatever the Content-Type (NaN, Infinity, NUL characters, lone
    surrogates and nesting deeper than the decoder can go refused); empty: {}."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise drf.ParseError(f"Malformed JSON body: {exc}") from None
        except RecursionError:  # deeper than the decoder can go (e.g. 100,000 nested arrays)
            raise drf.ParseError(TOO_DEEP) from None
        if may_hold_unstorable_strings(raw):
            refuse_unstorable_strings(data)
        return data


class PlainJSONRenderer(JSONRenderer):
    """Plain JSON, no studio envelope."""

    media_type = "application/json"


class JSONOnlyNegotiation(BaseContentNegotiation):
    """Always the first parser and renderer, whatever Content-Type and Accept say."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def error_message(detail) -> str:
    """One line from a DRF error detail (the first field's first message, named)."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = error_message(value)
            return inner if field == "non_field_errors" else f"{field}: {inner}"
    if isinstance(detail, list) and detail:
        return error_message(detail[0])
    return str(detail)
