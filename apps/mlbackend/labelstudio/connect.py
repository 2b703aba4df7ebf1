"""Calls Orchard makes to Label Studio's own API, with the token of the last /setup, under the
backend's fetch policy (`fetch.py`: allowed hosts, address checks, size and time limits).

- `check_label_studio`: at /setup, one `GET /api/projects/<id>/` proves that the token Label
  Studio sent (or the personal access token in Extra params) can read its data. Label Studio shows
  /setup's error in its connect dialog, so a refused token, or a Label Studio that Orchard may not
  or cannot reach when the project's task data must be downloaded, fails the connection there,
  with a message naming the fix, instead of every prediction failing later. A success is
  remembered for `CHECK_CACHE_S` (Label Studio calls /setup before every prediction batch).
- `export_annotated_tasks`: the project's annotated tasks (`GET /api/projects/<id>/export
  ?exportType=JSON&download_all_tasks=false`, as label-studio-sdk exports them), for training
  that does not depend on webhooks having reached Orchard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
import time
from typing import Any
from urllib.parse import urljoin

from apps.core.conf import number_setting
from apps.core.exceptions import PayloadTooLarge, ValidationFailed
from apps.mlbackend.labelstudio.fetch import (
    LS_EXCHANGE_FAILED,
    FetchFailed,
    FetchPolicy,
    FetchRefused,
    fetch_url,
)

CHECK_CACHE_S = 300.0
CHECK_MAX_BYTES = 1024 * 1024

TOKEN_REFUSED = (
    "Label Studio refused the access token it sent to this ML backend (Label Studio 1.23 turns "
    "legacy API tokens off for new organizations), so Orchard cannot download uploaded files "
    "or read annotations. Fix: create a personal access token in Label Studio (Account & "
    'Settings -> Personal Access Token) and put {"label_studio_api_key": "<token>"} in this ML '
    "backend's Extra params, or turn legacy tokens on (Organization -> API Tokens Settings)."
)
API_KEY_REFUSED = (
    "Label Studio refused the personal access token given in Extra params "
    "(label_studio_api_key). Fix: create a new personal access token in Label Studio (Account & "
    "Settings -> Personal Access Token) and put it in this ML backend's Extra params."
)
PRIVATE_HOST = (
    "Orchard may not download task data from Label Studio at {host}: it is a private, loopback "
    "or link-local address. Fix: a project admin turns allow_private_networks on for this "
    "backend in Orchard, or start Label Studio with LABEL_STUDIO_HOST set to a public address "
    "Orchard can reach."
)
UNREACHABLE = (
    "Orchard cannot reach Label Studio at {url} to download this project's task data. Fix: start "
    "Label Studio with LABEL_STUDIO_HOST set to an address Orchard can reach (the hostname Label "
    "Studio sends is LABEL_STUDIO_HOST, by default http://localhost:<port>)."
)

_checked: dict[str, float] = {}
_checked_lock = threading.Lock()


# Label Studio's project ids as it sends them: "7.1732300000" (id.creation time), "7".
_LS_PROJECT = re.compile(r"(\d{1,18})(?:\.\d{0,30})?")
NOT_A_PROJECT = (
    'project must be a Label Studio project id (7, "7.1732300000" or {"id": 7}), as Label Studio '
    "sends it."
)


def ls_project_key(value: Any, *, stored: bool = False) -> str:
    """Label Studio's project id from what it sends: `"7.1732300000"` (/setup, /predict), `7`,
    or a webhook's project object `{"id": 7, ...}` -> `"7"` ("" when none).

    Anything else is refused (ValidationFailed): each project key gets a model of its own, so a
    junk key (a list, a word, a negative number) made a cluster per request until the backend's
    project limit shut its real projects out. `stored=True` reads a value stored before this
    rule: junk there is no project ("")."""
    if isinstance(value, dict):  # a webhook's project object always names its id
        value = value.get("id", False)
    elif value is None or value == "":
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**18:
        return str(value)
    if isinstance(value, str):
        found = _LS_PROJECT.fullmatch(value.strip())
        if found:
            return found.group(1)
        if not value.strip():
            return ""
    if stored:
        return ""
    raise ValidationFailed(NOT_A_PROJECT)


def _api_url(policy: FetchPolicy, path: str) -> str:
    return urljoin(policy.label_studio_url.rstrip("/") + "/", path)


def clear_check_cache() -> None:
    with _checked_lock:
        _checked.clear()


def check_label_studio(
    *,
    policy: FetchPolicy,
    ls_project: str,
    needs_downloads: bool,
    api_key_given: bool,
    report_unreachable: bool = True,
) -> None:
    """ValidationFailed (naming the fix) when Label Studio refuses the token, or, for a project
    whose task data must be downloaded, when Orchard may not or cannot reach Label Studio.

    Without `report_unreachable` an unreachable host passes: a backend without credentials that
    may fetch from private networks must not tell anyone who calls /setup which internal
    host:port answers (the same rule as fetch errors)."""
    if not policy.label_studio_url or not policy.access_token:
        return
    path = f"api/projects/{ls_project}/" if ls_project.isdigit() else "api/current-user/whoami"
    url = _api_url(policy, path)
    key = hashlib.sha256(f"{url}\0{policy.access_token}".encode()).hexdigest()
    now = time.monotonic()
    with _checked_lock:
        if _checked.get(key, 0.0) > now:
            return
    timeout = number_setting("LABELSTUDIO_SETUP_CHECK_TIMEOUT_S")
    checking = dataclasses.replace(
        policy, timeout_s=min(policy.timeout_s, timeout), max_bytes=CHECK_MAX_BYTES
    )
    try:
        fetch_url(url, checking)
    except PayloadTooLarge:
        pass  # Label Studio answered 200 with a large project: the token reads it
    except FetchRefused:
        if needs_downloads:
            host = policy.label_studio_origin[1] if policy.label_studio_origin else url
            raise ValidationFailed(PRIVATE_HOST.format(host=host)) from None
        return
    except FetchFailed as exc:
        if exc.upstream_status in (401, 403) or exc.message == LS_EXCHANGE_FAILED:
            raise ValidationFailed(API_KEY_REFUSED if api_key_given else TOKEN_REFUSED) from None
        if exc.upstream_status is None and needs_downloads and report_unreachable:
            raise ValidationFailed(UNREACHABLE.format(url=policy.label_studio_url)) from None
        return  # Label Studio answered something else: nothing known against the token
    with _checked_lock:
        _checked[key] = now + CHECK_CACHE_S
        while len(_checked) > 1024:
            _checked.pop(next(iter(_checked)))


def export_annotated_tasks(*, policy: FetchPolicy, ls_project: str) -> list[dict]:
    """The Label Studio project's annotated tasks, each with its `annotations` (see above)."""
    if not ls_project.isdigit():
        raise ValidationFailed("The Label Studio project id is unknown: call /setup first.")
    if not policy.label_studio_url:
        raise ValidationFailed("The Label Studio host is unknown: call /setup first.")
    url = _api_url(
        policy, f"api/projects/{ls_project}/export?exportType=JSON&download_all_tasks=false"
    )
    exporting = dataclasses.replace(
        policy,
        max_bytes=int(number_setting("LABELSTUDIO_EXPORT_MAX_BYTES")),
        timeout_s=number_setting("LABELSTUDIO_EXPORT_TIMEOUT_S"),
    )
    body = fetch_url(url, exporting)
    try:
        tasks = json.loads(body)
    except (ValueError, RecursionError):
        raise ValidationFailed("Label Studio's export is not JSON.") from None
    if not isinstance(tasks, list):
        raise ValidationFailed("Label Studio's export is not a list of tasks.")
    return [task for task in tasks if isinstance(task, dict)]
