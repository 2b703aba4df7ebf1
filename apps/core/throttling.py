"""Throttles of every surface, all counting callers by `apps.core.clientip` (never by a
client-written X-Forwarded-For).

- `ScopedRateThrottle`: DRF's scoped throttle (`throttle_scope` + `DEFAULT_THROTTLE_RATES`),
  keyed by `client_ident` and reading its rate at request time. Views use this one, never
  `rest_framework.throttling` directly.
- `credential_attempt`: wraps every password / Basic-credential check. Failed checks are counted
  in the cache per client address and per account name, `AUTH_FAILURE_RATE` (default `10/min`)
  of each; past it the check is refused with `CredentialsThrottled` (a DRF `Throttled`, 429 with
  `Retry-After` on surfaces that speak HTTP status codes) BEFORE the password hasher runs. Each
  attempt is counted before it runs and uncounted when it succeeds, so parallel requests cannot
  slip more guesses in than the rate.

    with credential_attempt(request, account=account_key(username)) as attempt:
        user = authenticate(request, username=username, password=password)
        if user is not None:
            attempt.succeeded()
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from rest_framework import exceptions as drf
from rest_framework import throttling
from rest_framework.settings import api_settings

from apps.core.clientip import client_ident
from apps.core.conf import setting

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ClientIdentMixin:
    """Count callers by `client_ident` (trusted-proxy aware, IPv6 per /64)."""

    def get_ident(self, request):
        return client_ident(request)


class ScopedRateThrottle(ClientIdentMixin, throttling.ScopedRateThrottle):
    def get_rate(self):
        # DRF binds the rates when the module is imported; read them now so that settings
        # changed later (tests, reloads) apply.
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(f"No throttle rate set for scope {self.scope!r}.") from None


# --- failed credential checks ----------------------------------------------------------------


class CredentialsThrottled(drf.Throttled):
    default_detail = "Too many failed sign-in attempts (AUTH_FAILURE_RATE)."
    default_code = "throttled"


def parse_rate(value) -> tuple[int, int] | None:
    """`"10/min"` -> (10, 60); `off` -> None (no limit)."""
    text = str(value).strip().lower()
    if text in ("off", "none"):
        return None
    count, _, period = text.partition("/")
    try:
        number = int(count)
        duration = _PERIODS[period.strip()[0]]
    except (ValueError, IndexError, KeyError):
        raise ImproperlyConfigured(
            f"AUTH_FAILURE_RATE: {value!r} is not a rate like '10/min' (or 'off')."
        ) from None
    if number < 1:
        raise ImproperlyConfigured("AUTH_FAILURE_RATE: the number of attempts must be >= 1.")
    return number, duration


def auth_failure_rate() -> tuple[int, int] | None:
    return parse_rate(setting("AUTH_FAILURE_RATE"))


def account_key(name: str) -> str:
    """The account part of an Orchard account's counters (the same on every surface: the main
    API and Hanami logins, the admin login, orchestrator Basic auth)."""
    return f"user:{(name or '').casefold()}"


def _cache_key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"authfail:{kind}:{digest}"


def _reserve(key: str, duration: int) -> int:
    try:
        return cache.incr(key)
    except ValueError:
        pass
    if cache.add(key, 1, duration):
        cache.set(f"{key}:t", time.time(), duration)
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired in between
        cache.set(key, 1, duration)
        return 1


def _release(key: str) -> None:
    try:
        cache.decr(key)
    except ValueError:
        pass


class CredentialAttempt:
    """One credential check; see the module docstring."""

    def __init__(self, *, client: str, account: str | None) -> None:
        self.client = client
        self.account = account
        self.keys = [_cache_key("client", client)]
        if account:
            self.keys.append(_cache_key("account", account))
        self.reserved: list[str] = []

    def __enter__(self) -> CredentialAttempt:
        rate = auth_failure_rate()
        if rate is None:
            return self
        limit, duration = rate
        counts = [_reserve(key, duration) for key in self.keys]
        self.reserved = list(self.keys)
        over = [key for key, count in zip(self.keys, counts, strict=True) if count > limit]
        if over:
            self.succeeded()  # a refused attempt ran no check: it is no failure
            if cache.add(f"{over[0]}:logged", 1, duration):  # once per window, not per refusal
                logger.warning(
                    "Credential checks throttled (AUTH_FAILURE_RATE) for client %s account %s",
                    self.client,
                    self.account,
                )
            raise CredentialsThrottled(wait=self._wait(over, duration))
        return self

    def __exit__(self, *exc_info) -> None:
        return None  # not succeeded(): the attempt stays counted as a failure

    def succeeded(self) -> None:
        for key in self.reserved:
            _release(key)
        self.reserved = []

    @staticmethod
    def _wait(keys: list[str], duration: int) -> float:
        now = time.time()
        starts = cache.get_many([f"{key}:t" for key in keys])
        waits = [
            float(starts[f"{key}:t"]) + duration - now if f"{key}:t" in starts else duration
            for key in keys
        ]
        return max(1.0, min(float(duration), max(waits)))


def credential_attempt(client: Any, *, account: str | None) -> CredentialAttempt:
    """A context manager around one credential check for `account` (`account_key(name)` for
    Orchard accounts, another namespace for other secrets) by `client`: a request or ASGI scope
    (counted by its `client_ident`), or a `client_ident` already taken."""
    ident = client if isinstance(client, str) else client_ident(client)
    return CredentialAttempt(client=ident, account=account)
