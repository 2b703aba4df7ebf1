"""Fetching task data (images) for a backend: only from the hosts it allows, never from internal
addresses unless explicitly allowed, with size and time limits.

A task value is resolved to bytes by `fetch_task_value`:

- `data:` URIs are decoded in place (base64 or percent-encoded), within the size limit;
- paths starting with `/` (Label Studio's `/data/upload/...`, `/data/local-files/?d=...`) are
  joined to the Label Studio base URL the backend was set up with, and fetched with its access
  token (`Authorization: Token ...`);
- `http(s)://` URLs are fetched when their host is the Label Studio host or one of the backend's
  `allowed_hosts`; any other scheme is refused.

Every fetch resolves the host, checks EVERY address it resolves to (private, loopback,
link-local, multicast, reserved and unspecified addresses are refused unless the backend allows
private networks) and connects to one of the checked addresses itself, so a second DNS answer
cannot swap in another address. Redirects are followed (at most `MAX_REDIRECTS`) only to hosts
the backend allows, with the same checks, and credentials never go to another host than the one
they were meant for. Limits: `LABELSTUDIO_FETCH_MAX_BYTES` (default 20 MiB) and
`LABELSTUDIO_FETCH_TIMEOUT_S` (default 10 s for the whole fetch, redirects included).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

from django.conf import settings

from apps.core.exceptions import OrchardError, PayloadTooLarge, ValidationFailed

MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULTS = {"LABELSTUDIO_FETCH_MAX_BYTES": 20 * 1024 * 1024, "LABELSTUDIO_FETCH_TIMEOUT_S": 10.0}
_CHUNK = 64 * 1024
USER_AGENT = "Orchard-ML-backend"

# Indirection so tests can answer DNS without the network.
_getaddrinfo = socket.getaddrinfo


def setting(name: str) -> float:
    """A fetch limit: Django setting, else the environment, else the default."""
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name)
    return float(value) if value not in (None, "") else float(_DEFAULTS[name])


class FetchRefused(ValidationFailed):
    """The URL may not be fetched for this backend (host, scheme or address not allowed)."""


class FetchFailed(OrchardError):
    """The allowed URL could not be fetched (network error, HTTP error, timeout)."""

    code, status, default_message = "FETCH_FAILED", 502, "Could not fetch the task data."


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
    max_bytes: int = field(default_factory=lambda: int(setting("LABELSTUDIO_FETCH_MAX_BYTES")))
    timeout_s: float = field(default_factory=lambda: setting("LABELSTUDIO_FETCH_TIMEOUT_S"))

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

    def headers_for(self, origin: tuple[str, str, int]) -> dict[str, str]:
        if origin == self.label_studio_origin:
            return {"Authorization": f"Token {self.access_token}"} if self.access_token else {}
        if self.basic_auth:
            raw = f"{self.basic_auth[0]}:{self.basic_auth[1]}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
        return {}


def fetch_task_value(value: str, policy: FetchPolicy) -> bytes:
    """The bytes a task value points to (data URI, Label Studio path or allowed URL)."""
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
    return fetch_url(value, policy)


def fetch_url(url: str, policy: FetchPolicy) -> bytes:
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
        headers = policy.headers_for(origin) if origin == first_origin else {}
        status, location, body = _get(url, origin, headers, policy, deadline)
        if status in _REDIRECTS and location:
            url = urljoin(url, location)
            continue
        if status != 200:
            raise FetchFailed(f"{origin[1]} answered HTTP {status} for the task data.")
        return body
    raise FetchFailed(f"More than {MAX_REDIRECTS} redirects fetching the task data.")


def check_address(address: str, *, allow_private: bool) -> None:
    """Refuse addresses inside the machine or its networks (unless private ones are allowed)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        raise FetchRefused(f"address {ip} may not be fetched from.")
    if allow_private:
        return
    if ip.is_private or ip.is_loopback or ip.is_link_local or not ip.is_global:
        raise FetchRefused(
            f"address {ip} is private, loopback or link-local; allow private networks on the "
            "backend to fetch from it."
        )


def parse_host_entry(entry: str) -> tuple[str, int | None]:
    """An allowed-hosts entry as (lowercase host, port or None): `name`, `name:port`, an IPv4
    address, `[v6]` or `[v6]:port` (a bare IPv6 address too). Raises ValueError."""
    text = str(entry).strip().lower()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed host {entry!r}")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host or any(c in host for c in "/?#@ \t"):
        raise ValueError(f"malformed host {entry!r}")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError(f"malformed port in {entry!r}")
    return host, int(port_text) if port_text else None


def url_origin(url: str) -> tuple[str, str, int]:
    """(scheme, lowercase host, port) of an http(s) URL; FetchRefused for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchRefused(f"{url[:200]!r} is not a valid URL.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchRefused(f"URL scheme {scheme or '(none)'!r} is not allowed (http, https).")
    if not parts.hostname:
        raise FetchRefused(f"{url[:200]!r} has no host.")
    if parts.username or parts.password:
        raise FetchRefused("URLs with credentials in them are not fetched.")
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def _resolve(host: str, port: int, allow_private: bool, deadline: float) -> list[str]:
    if time.monotonic() > deadline:
        raise FetchFailed("Timed out fetching the task data.")
    try:
        infos = _getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchFailed(f"Cannot resolve {host!r}: {exc}.") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise FetchFailed(f"{host!r} has no address.")
    for address in addresses:  # every one: an attacker may mix a public and a private answer
        check_address(address, allow_private=allow_private)
    return addresses


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an already-checked address while sending the URL's host name."""

    def __init__(self, host, port, *, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host, port, *, address, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _get(url, origin, headers, policy: FetchPolicy, deadline: float):
    scheme, host, port = origin
    addresses = _resolve(host, port, policy.allow_private_networks, deadline)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    cls = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    last_error: Exception | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        conn = cls(host, port, address=address, timeout=remaining)
        try:
            conn.request("GET", target, headers={"User-Agent": USER_AGENT, **headers})
            response = conn.getresponse()
            if response.status in _REDIRECTS:
                return response.status, response.getheader("Location"), b""
            if response.status != 200:
                return response.status, None, b""
            return 200, None, _read_limited(response, conn, policy.max_bytes, deadline)
        except (OSError, http.client.HTTPException) as exc:
            last_error = exc
        finally:
            conn.close()
    if last_error is None:
        raise FetchFailed("Timed out fetching the task data.")
    if isinstance(last_error, TimeoutError):
        raise FetchFailed("Timed out fetching the task data.")
    raise FetchFailed(f"Could not fetch from {host}: {last_error}.")


def _read_limited(response, conn, max_bytes: int, deadline: float) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The task data is larger than {max_bytes} bytes.")
    chunks, total = [], 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchFailed("Timed out fetching the task data.")
        if conn.sock is not None:
            conn.sock.settimeout(remaining)
        chunk = response.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"The task data is larger than {max_bytes} bytes.")
        chunks.append(chunk)


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
