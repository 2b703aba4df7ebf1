"""Prefixed public ids (`proj-a1b2c3d4e5f6`, `exp-...`, `run-...`) as the studio API shows them."""

import functools
import re
import secrets

_ID_HEX = 12
_PREFIX_RE = re.compile(r"^[a-z]{2,8}$")


def new_id(prefix: str) -> str:
    """A new random id: the prefix, a dash and 12 hex digits (48 random bits)."""
    return f"{prefix}-{secrets.token_hex(_ID_HEX // 2)}"


def id_default(prefix: str) -> functools.partial:
    """A model field default that Django migrations can serialize."""
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"bad id prefix {prefix!r}")
    return functools.partial(new_id, prefix)
