"""Reading Orchard's tunables: every one is declared once in `config/settings/base.py`, with its
default and the environment variable that overrides it (read there, by django-environ, when the
settings load). Apps read them through `setting()` rather than `getattr(settings, ..., default)`
so that a name missing from base.py fails loudly (a typo would otherwise quietly fall back to a
caller's default) and tests override them with pytest-django's `settings` fixture."""

import os
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def setting(name: str) -> Any:
    """The value of the declared setting `name`.

    An empty declared value (None or "") falls back to the environment variable of the same
    name as it is now (a process may set one after its settings loaded: the test suite sets
    TORCH_THREADS so); the defaults themselves live in base.py.
    """
    try:
        value = getattr(settings, name)
    except AttributeError:
        raise ImproperlyConfigured(
            f"{name} is not a setting: declare it in config/settings/base.py"
        ) from None
    if value in (None, ""):
        value = os.environ.get(name)
    return None if value in (None, "") else value


def number_setting(name: str) -> float:
    """A declared numeric setting as a float (environment values may arrive as text)."""
    return float(setting(name))
