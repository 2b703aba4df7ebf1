"""The caller's address, one rule for every surface (HTTP views, throttles, gateways, websockets).

`X-Forwarded-For` is written by whoever sends the request, so it is believed only when the peer
(`REMOTE_ADDR`, or an ASGI scope's `client`) is one of `TRUSTED_PROXIES` (addresses or networks;
`unix` stands for a peer without an address, a proxy on a unix socket; empty by default: no
proxy is trusted and the header is ignored). Behind trusted proxies the client is the right-most
entry of the header that is not itself a trusted proxy: every proxy appends the address it got
the request from, so entries left of that one are the client's own words.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from apps.core.conf import setting

UNKNOWN = "unknown"
UNIX_PEER = "unix"

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _entries(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    return tuple(str(entry).strip() for entry in (value or ()) if str(entry).strip())


@lru_cache(maxsize=16)
def _proxies(entries: tuple[str, ...]) -> tuple[tuple, bool]:
    """(networks, whether a unix-socket peer counts as a proxy) of TRUSTED_PROXIES."""
    networks, unix = [], False
    for entry in entries:
        if entry.lower() == UNIX_PEER:
            unix = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"TRUSTED_PROXIES: {entry!r} is not an address or a network."
            ) from None
    return tuple(networks), unix


def trusted_proxies() -> tuple[tuple, bool]:
    return _proxies(_entries(setting("TRUSTED_PROXIES") or ()))


def parse_address(value: str | None) -> _Address | None:
    """An address from a peer or a forwarded entry (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `fe80::1%eth0`);
    IPv4-mapped IPv6 addresses become IPv4. None if it is not an address."""
    text = (value or "").strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    text = text.split("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: _Address | None, proxies: tuple[tuple, bool]) -> bool:
    networks, unix = proxies
    if address is None:
        return unix
    return any(address in network for network in networks)


def _peer_and_forwarded(request_or_scope: Any) -> tuple[str | None, list[str]]:
    """(peer address, X-Forwarded-For values) of a Django/DRF request or an ASGI scope."""
    if isinstance(request_or_scope, Mapping):  # an ASGI scope
        client = request_or_scope.get("client")
        peer = str(client[0]) if client else None
        headers: Iterable = request_or_scope.get("headers") or ()
        forwarded = [
            value.decode("latin-1") for name, value in headers if name.lower() == b"x-forwarded-for"
        ]
        return peer, forwarded
    meta = getattr(request_or_scope, "META", None) or {}
    header = meta.get("HTTP_X_FORWARDED_FOR")
    return meta.get("REMOTE_ADDR"), [header] if header else []


def client_address(request_or_scope: Any) -> _Address | None:
    """The caller's address (see the module docstring); None when there is none to tell."""
    peer, forwarded = _peer_and_forwarded(request_or_scope)
    address = parse_address(peer)
    proxies = trusted_proxies()
    if not _is_trusted(address, proxies):
        return address
    entries = [entry for value in forwarded for entry in value.split(",") if entry.strip()]
    for entry in reversed(entries):
        hop = parse_address(entry)
        if hop is None:
            return address  # garbage from further out: the last proxy is all we know
        address = hop
        if not _is_trusted(hop, proxies):
            return hop
    return address  # every hop is a trusted proxy: the first of them


def client_ip(request_or_scope: Any) -> str:
    """The caller's address as text (`UNKNOWN` if there is none): use this, never REMOTE_ADDR or
    X-Forwarded-For directly."""
    address = client_address(request_or_scope)
    return str(address) if address is not None else UNKNOWN


def client_ident(request_or_scope: Any) -> str:
    """The key a throttle counts a caller under: the address, or for IPv6 its /64 (one host
    usually holds a whole /64 and could otherwise change address at every attempt)."""
    address = client_address(request_or_scope)
    if address is None:
        return UNKNOWN
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
