"""Reading Orchard's tunables: a Django setting, else the environment variable of the same name,
else the caller's default (an empty value counts as unset). Apps read their numeric limits with
this, so tests can override them with `settings` and deployments with the environment alike."""

import os
from typing import Any

from django.conf import settings


def setting(name: str, default: Any = None) -> Any:
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name)
    return default if value in (None, "") else value


def number_setting(name: str, default: float) -> float:
    return float(setting(name, default))
