"""Outbound HTTP under one policy: every request Orchard makes to an address a user gave (Label
Studio task data, marketplace compute pushes) goes through `pinned_request`.

The host is resolved once and EVERY address it resolves to is checked (private, loopback,
link-local, multicast, reserved and unspecified addresses are refused unless private networks are
allowed); the connection goes to one of the checked addresses while the request names the URL's
host, so a second DNS answer cannot swap in another address. The whole exchange runs under one
deadline, and an answer is read at most `max_bytes` (checked on every receive: a server that
drips a byte at a time cannot hold the reader past the deadline). Errors keep the details (host,
port, errno) for the server log; callers decide what a client is told.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from apps.core.exceptions import OrchardError, PayloadTooLarge, ValidationFailed

REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
USER_AGENT = "Orchard-ML-backend"

logger = logging.getLogger(__name__)

# Indirection so tests can answer DNS without the network.
_getaddrinfo = socket.getaddrinfo


class FetchRefused(ValidationFailed):
    """The URL may not be fetched (host, scheme or address not allowed)."""


class FetchFailed(OrchardError):
    """The allowed URL could not be fetched (network error, HTTP error, timeout).

    `detail` (host, port, status, errno) is logged and kept on the exception for the server;
    the message every client sees is `public`, by default the generic one."""

    code, status, default_message = "FETCH_FAILED", 502, "Could not fetch the task data."

    def __init__(
        self, detail: str | None = None, *, public: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(public or self.default_message)
        self.detail = detail or self.message
        # The HTTP status the far server answered (None when none answered). Orchard's own
        # answer stays `status` (502): a far 404 is not Orchard's 404.
        self.upstream_status = status
        logger.warning("Outbound request failed: %s", self.detail)


def check_address(address: str, *, allow_private: bool) -> None:
    """Refuse addresses inside the machine or its networks (unless private ones are allowed)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        logger.warning("Outbound: refused to fetch from address %s", ip)
        raise FetchRefused("The host resolves to an address that may not be fetched from.")
    if allow_private:
        return
    if ip.is_private or ip.is_loopback or ip.is_link_local or not ip.is_global:
        logger.warning("Outbound: refused to fetch from private address %s", ip)
        raise FetchRefused(
            "The host resolves to a private, loopback or link-local address; a project admin "
            "may allow private networks on the backend."
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
        raise FetchFailed(f"Timed out before resolving {host!r}")
    try:
        infos = _getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchFailed(f"Cannot resolve {host!r}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise FetchFailed(f"{host!r} has no address")
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


class KeepAlive:
    """Connections kept open between the requests of one caller that fetches several URLs in a
    row (a lane of a /predict batch): the next request to the same origin reuses the idle one
    instead of resolving, connecting (and, for https, shaking hands) again. At most one idle
    connection per origin; not shared between threads (one per lane). A kept connection stays
    on the address checked when it was opened, under the same `allow_private` (part of the key).
    Close it when done (a context manager)."""

    def __init__(self) -> None:
        self._idle: dict[tuple, http.client.HTTPConnection] = {}

    def take(self, key: tuple) -> http.client.HTTPConnection | None:
        return self._idle.pop(key, None)

    def keep(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        old = self._idle.pop(key, None)
        if old is not None:
            old.close()
        self._idle[key] = conn

    def close(self) -> None:
        for conn in self._idle.values():
            conn.close()
        self._idle.clear()

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pinned_request(  # noqa: PLR0913 - keyword-only options
    method: str,
    url: str,
    origin: tuple[str, str, int],
    headers: dict[str, str],
    *,
    allow_private: bool,
    max_bytes: int,
    deadline: float,
    body: bytes | None = None,
    keep_alive: KeepAlive | None = None,
) -> tuple[int, str | None, bytes]:
    """One request to `url` (whose `url_origin` is `origin`) on a checked, pinned address:
    (status, Location of a redirect or None, body of a 200 or b""). FetchRefused for an address
    that may not be reached, FetchFailed for network errors and the deadline, PayloadTooLarge
    for a 200 answer over `max_bytes`. Redirects are the caller's to follow (or not).

    With `keep_alive`, an idle connection to the origin is reused and the connection is kept
    after an answer read to its end that does not close it. A GET on a reused connection that
    the server closed while it was idle (no status line came back) is sent again on a new one."""
    scheme, host, port = origin
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"User-Agent": USER_AGENT, **headers}
    key = (origin, allow_private)
    request = _Request(method, target, body, headers, max_bytes, deadline)
    if keep_alive is not None and (idle := keep_alive.take(key)) is not None:
        try:
            return _exchange(idle, request, keep_alive, key)
        except (ConnectionResetError, BrokenPipeError) as exc:  # RemoteDisconnected among them
            if method != "GET":  # sent, maybe acted on: never twice
                raise _failed(host, port, exc) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _failed(host, port, exc) from None
    addresses = _resolve(host, port, allow_private, deadline)
    cls = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    last_error: Exception | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        conn = cls(host, port, address=address, timeout=remaining)
        try:
            return _exchange(conn, request, keep_alive, key)
        except (OSError, http.client.HTTPException) as exc:
            last_error = exc
    raise _failed(host, port, last_error)


def _failed(host: str, port: int, error: Exception | None) -> FetchFailed:
    """The failure of an exchange with `host:port` (None: the deadline passed before one)."""
    if error is None or isinstance(error, TimeoutError):
        return FetchFailed(f"Timed out fetching {host}:{port}")
    return FetchFailed(f"Could not fetch from {host}:{port}: {error}")


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    body: bytes | None
    headers: dict[str, str]
    max_bytes: int
    deadline: float


def _exchange(
    conn: http.client.HTTPConnection, request: _Request, keep_alive: KeepAlive | None, key: tuple
) -> tuple[int, str | None, bytes]:
    """Send the request on `conn` and read the answer; the connection is then closed, or kept in
    `keep_alive` when the answer was read to its end and the server keeps the connection open."""
    deadline = request.deadline
    kept = False
    try:
        if conn.sock is not None:  # a reused connection: this request's share of the time
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        conn.request(request.method, request.target, body=request.body, headers=request.headers)
        response = conn.getresponse()
        location = None
        if response.status == 200:
            data = _read_limited(response, conn, request.max_bytes, deadline)
        else:
            _drain_short(response, conn, deadline)
            data = b""
            if response.status in REDIRECTS:
                location = response.getheader("Location")
        if response.length == 0:  # read to its end (http.client closes it only on the next read)
            response.close()
        if keep_alive is not None and response.isclosed() and not response.will_close:
            keep_alive.keep(key, conn)
            kept = True
        return response.status, location, data
    finally:
        if not kept:
            conn.close()


def _drain_short(response, conn, deadline: float, limit: int = _CHUNK) -> None:
    """Read (and drop) up to `limit` bytes of an answer whose body is not wanted (a 202's, a
    redirect's), so that closing sends the far server a FIN, not a reset of unread data (its
    keep-alive read failed with "Connection reset by peer"). Within the exchange's deadline,
    checked on every receive as `_read_limited` does (a dripping server cannot hold it); a
    longer body is left, and the close resets it as before."""
    read = 0
    try:
        while read < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if conn.sock is not None:
                conn.sock.settimeout(remaining)
            chunk = response.read1(limit - read)
            if not chunk:
                return
            read += len(chunk)
    except (OSError, http.client.HTTPException):
        pass


def _read_limited(response, conn, max_bytes: int, deadline: float) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The task data is larger than {max_bytes} bytes.")
    chunks: list[bytes] = []
    total = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchFailed("Timed out reading the task data")
        if conn.sock is not None:
            conn.sock.settimeout(remaining)
        # read1: what one receive brought. read(n) waits for n bytes, and a server that drips
        # a byte at a time never lets one receive time out: the deadline would never be checked.
        chunk = response.read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"The task data is larger than {max_bytes} bytes.")
        chunks.append(chunk)
