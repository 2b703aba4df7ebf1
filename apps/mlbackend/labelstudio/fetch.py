"""Fetching task data (images) for a backend: only from the hosts it allows, never from internal
addresses unless explicitly allowed, with size and time limits.

A task value is resolved to bytes by `fetch_task_value`:

- `data:` URIs are decoded in place (base64 or percent-encoded), within the size limit;
- paths starting with `/` (Label Studio's `/data/upload/...`, `/data/local-files/?d=...`) are
  joined to the Label Studio base URL the backend was set up with, and fetched with its access
  token, as label-studio-sdk sends it: a legacy token as `Authorization: Token ...`, a JWT as
  `Authorization: Bearer ...`, and a personal access token (a JWT refresh token) is first
  exchanged for an access token at Label Studio's `POST /api/token/refresh/` (cached until it
  expires). Label Studio 1.23 turns legacy tokens off for new organizations, so the token it
  sends to `/setup` is then refused; `/setup`'s `extra_params.label_studio_api_key` (a personal
  access token) replaces it (see services.backend_setup);
- `http(s)://` URLs are fetched when their host is the Label Studio host or one of the backend's
  `allowed_hosts`; any other scheme is refused.

Every fetch goes through `apps.core.outbound.pinned_request`, which resolves the host, checks
EVERY address it resolves to (private, loopback,
link-local, multicast, reserved and unspecified addresses are refused unless the backend allows
private networks) and connects to one of the checked addresses itself, so a second DNS answer
cannot swap in another address. Redirects are followed (at most `MAX_REDIRECTS`) only to hosts
the backend allows, with the same checks, and credentials never go to another host than the one
they were meant for. Limits: `LABELSTUDIO_FETCH_MAX_BYTES` (default 20 MiB) and
`LABELSTUDIO_FETCH_TIMEOUT_S` (default 10 s for the whole fetch, redirects included).

Errors never tell the caller what lies behind an allowed host: a failed fetch (connection refused,
timeout, DNS failure, any HTTP status, too many redirects) answers the same generic "Could not
fetch the task data." and a refused address does not name the address; the details (host, port,
status, errno) go to the server log only. The one exception is Label Studio refusing the access
token, whose answer names the remedy (and nothing about the URL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes, urljoin

from apps.core.conf import number_setting
from apps.core.exceptions import PayloadTooLarge, ValidationFailed
from apps.core.outbound import (  # noqa: F401 - FetchFailed, check_address: this module's API
    REDIRECTS,
    FetchFailed,
    FetchRefused,
    KeepAlive,
    check_address,
    parse_host_entry,
    pinned_request,
    url_origin,
)

MAX_REDIRECTS = 3
LS_TOKEN_REFUSED = (
    "Could not fetch the task data: Label Studio refused the access token. Label Studio 1.23 "
    "turns legacy API tokens off for new organizations; put a personal access token in the ML "
    'backend\'s Extra params in Label Studio, {"label_studio_api_key": "<token>"}, or turn legacy '
    "tokens on (Organization -> API Tokens Settings)."
)
LS_EXCHANGE_FAILED = (
    "Could not fetch the task data: Label Studio did not exchange the personal access token; "
    "check label_studio_api_key in the ML backend's Extra params."
)


@dataclass(frozen=True)
class FetchPolicy:
    """Where a backend may fetch from, and with which credentials.

    `label_studio_url` is the base of relative paths and gets `access_token`; `allowed_hosts`
    entries are `name` (any port) or `name:port`. `basic_auth` (Label Studio's task-data
    login/password) goes only to allowed hosts that are not the Label Studio host.
    """

    label_studio_url: str = ""
    access_token: str = ""
    allowed_hosts: tuple[str, ...] = ()
    allow_private_networks: bool = False
    basic_auth: tuple[str, str] | None = None
    max_bytes: int = field(
        default_factory=lambda: int(number_setting("LABELSTUDIO_FETCH_MAX_BYTES"))
    )
    timeout_s: float = field(default_factory=lambda: number_setting("LABELSTUDIO_FETCH_TIMEOUT_S"))

    @property
    def label_studio_origin(self) -> tuple[str, str, int] | None:
        if not self.label_studio_url:
            return None
        try:
            return url_origin(self.label_studio_url)
        except FetchRefused:
            return None

    def allows(self, scheme: str, host: str, port: int) -> bool:
        if (scheme, host, port) == self.label_studio_origin:
            return True
        for entry in self.allowed_hosts:
            name, entry_port = parse_host_entry(entry)
            if name == host and entry_port in (None, port):
                return True
        return False

    def headers_for(
        self, origin: tuple[str, str, int], deadline: float | None = None
    ) -> dict[str, str]:
        if origin == self.label_studio_origin:
            return label_studio_authorization(self, deadline)
        if self.basic_auth:
            raw = f"{self.basic_auth[0]}:{self.basic_auth[1]}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
        return {}


def fetch_task_value(value: str, policy: FetchPolicy, keep_alive: KeepAlive | None = None) -> bytes:
    """The bytes a task value points to (data URI, Label Studio path or allowed URL); with
    `keep_alive`, connections are reused between the values one caller fetches in a row."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed("The task value is empty.")
    value = value.strip()
    if value.startswith("data:"):
        return _decode_data_uri(value, policy.max_bytes)
    if value.startswith("/") and not value.startswith("//"):
        if not policy.label_studio_url:
            raise FetchRefused(
                f"{value!r} is relative to Label Studio, but no Label Studio hostname is known: "
                "call /setup with `hostname` first."
            )
        value = urljoin(policy.label_studio_url.rstrip("/") + "/", value.lstrip("/"))
    return fetch_url(value, policy, keep_alive)


def fetch_url(url: str, policy: FetchPolicy, keep_alive: KeepAlive | None = None) -> bytes:
    """GET an allowed URL, following redirects to allowed hosts only (see the module docstring)."""
    deadline = time.monotonic() + policy.timeout_s
    first_origin = None
    for _hop in range(MAX_REDIRECTS + 1):
        origin = url_origin(url)
        if not policy.allows(*origin):
            raise FetchRefused(
                f"host {origin[1]!r} is not allowed for this backend "
                "(only the Label Studio host and the backend's allowed_hosts)."
            )
        first_origin = first_origin or origin
        headers = policy.headers_for(origin, deadline) if origin == first_origin else {}
        status, location, body = pinned_request(
            "GET",
            url,
            origin,
            headers,
            allow_private=policy.allow_private_networks,
            max_bytes=policy.max_bytes,
            deadline=deadline,
            keep_alive=keep_alive,
        )
        if status in REDIRECTS and location:
            url = urljoin(url, location)
            continue
        if status == 401 and origin == policy.label_studio_origin:
            raise FetchFailed(
                f"{origin[1]} answered HTTP 401 for {url}", public=LS_TOKEN_REFUSED, status=401
            )
        if status != 200:
            raise FetchFailed(
                f"{origin[1]}:{origin[2]} answered HTTP {status} for {url}", status=status
            )
        return body
    raise FetchFailed(f"More than {MAX_REDIRECTS} redirects fetching {url}")


# --- Label Studio tokens (as label-studio-sdk sends them) ----------------------------------------

_ACCESS_CACHE: dict[str, tuple[str, float]] = {}
_ACCESS_LOCK = threading.Lock()
_ACCESS_CACHE_MAX = 256
_ACCESS_MARGIN_S = 30.0
REFRESH_PATH = "api/token/refresh/"
MAX_TOKEN_ANSWER = 64 * 1024


def jwt_claims(token: str) -> dict | None:
    """The (unverified) claims of a JWT-shaped token, None for anything else (a legacy token)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        decoded = [
            json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            for part in parts[:2]
        ]
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    header, claims = decoded
    if not isinstance(header, dict) or "alg" not in header or not isinstance(claims, dict):
        return None
    return claims


def label_studio_authorization(policy: FetchPolicy, deadline: float | None = None) -> dict:
    """The Authorization header for the Label Studio host: `Token` for a legacy token, `Bearer`
    for a JWT; a refresh token (personal access token) is exchanged for an access token."""
    token = policy.access_token
    if not token:
        return {}
    claims = jwt_claims(token)
    if claims is None:
        return {"Authorization": f"Token {token}"}
    if claims.get("token_type") == "refresh":
        token = _access_token(policy, token, deadline)
    return {"Authorization": f"Bearer {token}"}


def _access_token(policy: FetchPolicy, refresh: str, deadline: float | None) -> str:
    key = hashlib.sha256(f"{policy.label_studio_url}\0{refresh}".encode()).hexdigest()
    now = time.time()
    with _ACCESS_LOCK:
        cached = _ACCESS_CACHE.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
    deadline = deadline if deadline is not None else time.monotonic() + policy.timeout_s
    url = urljoin(policy.label_studio_url.rstrip("/") + "/", REFRESH_PATH)
    origin = url_origin(url)
    body = json.dumps({"refresh": refresh}).encode()
    status, _location, answer = pinned_request(
        "POST",
        url,
        origin,
        {"Content-Type": "application/json", "Accept": "application/json"},
        allow_private=policy.allow_private_networks,
        max_bytes=MAX_TOKEN_ANSWER,
        deadline=deadline,
        body=body,
    )
    access = None
    if status == 200:
        try:
            access = json.loads(answer).get("access")
        except (ValueError, AttributeError):
            access = None
    if not isinstance(access, str) or not access:
        raise FetchFailed(
            f"Label Studio answered HTTP {status} to /{REFRESH_PATH}",
            public=LS_EXCHANGE_FAILED,
            status=401 if status in (400, 401, 403) else status,
        )
    expires = (jwt_claims(access) or {}).get("exp")
    expires_at = float(expires) - _ACCESS_MARGIN_S if isinstance(expires, int | float) else now + 60
    with _ACCESS_LOCK:
        _ACCESS_CACHE[key] = (access, expires_at)
        while len(_ACCESS_CACHE) > _ACCESS_CACHE_MAX:
            _ACCESS_CACHE.pop(next(iter(_ACCESS_CACHE)))
    return access


def clear_token_cache() -> None:
    with _ACCESS_LOCK:
        _ACCESS_CACHE.clear()


def _decode_data_uri(value: str, max_bytes: int) -> bytes:
    header, sep, payload = value[5:].partition(",")
    if not sep:
        raise ValidationFailed("Malformed data: URI (no comma).")
    # base64 is 4/3 of the bytes: refuse before decoding anything too large.
    if len(payload) * 3 // 4 > max_bytes:
        raise PayloadTooLarge(f"The task data is larger than {max_bytes} bytes.")
    if header.lower().endswith(";base64"):
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError):
            raise ValidationFailed("Malformed base64 in a data: URI.") from None
    else:
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"The task data is larger than {max_bytes} bytes.")
    return data
