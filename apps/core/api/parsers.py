"""The JSON parsers' shared rules, on top of DRF's JSONParser and the gateways' AnyJSONParser:

- a body nested deeper than Python can decode (json raises RecursionError, not ValueError, for
  e.g. 100,000 nested arrays) is a parse error;
- no string (value or key) may hold a NUL character: PostgreSQL can store none in text or jsonb
  and answered a DataError (a 500) where SQLite took it;
- nor a lone surrogate (the escape `"\\ud800"` decodes to one): no database stores it (it has no
  UTF-8 form), and it answered 500 wherever a string reached the database unvalidated.
"""

import re

from rest_framework import exceptions as drf
from rest_framework import parsers

TOO_DEEP = "Malformed JSON body: nested too deeply."
HAS_NUL = "Malformed JSON body: NUL characters (\\u0000) are not allowed in strings."
HAS_SURROGATE = "Malformed JSON body: lone surrogates (\\ud800-\\udfff) are not allowed in strings."
# What no database stores in text: NUL (PostgreSQL) and lone surrogates (no UTF-8 form).
UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")


# Strict JSON text can only spell a NUL or a lone surrogate as an escape (\u0000, \ud800-\udfff):
# raw control characters are malformed, and UTF-8 encodes no surrogate.
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def may_hold_unstorable_strings(raw: bytes) -> bool:
    """False when the JSON text `raw` cannot decode to a NUL or a lone surrogate (no escape that
    spells one): the decoded value need not be walked (100,000 Label Studio tasks: 1.5 s)."""
    return _UNSTORABLE_ESCAPE.search(raw) is not None


def refuse_unstorable_strings(value) -> None:
    """Raise a ParseError if a string anywhere in the decoded JSON `value` holds a NUL or a lone
    surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            found = UNSTORABLE_CHARS.search(item)
            if found:
                raise drf.ParseError(HAS_NUL if found.group() == "\x00" else HAS_SURROGATE)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise drf.ParseError(TOO_DEEP) from None
        refuse_unstorable_strings(data)
        return data
