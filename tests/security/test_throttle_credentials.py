"""Every credential check is throttled per client address and per account name, before the
password hasher runs, and answers in its surface's own 429 format.

Before, Basic auth on `/orchestrator/` and `/ml/<id>/` and the form of `/admin/login/` had no
throttle at all, and each failed attempt cost a password hash (~0.7 s of CPU in production): an
unbounded online guessing oracle and a CPU exhaustion lever. Label Studio backends also checked
their own Basic password with the login password hasher on every request.
"""

import base64
import json
import random

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher, make_password
from django.test import Client
from rest_framework.test import APIClient

from apps.mlbackend.models import LabelStudioBackend
from tests.factories import PASSWORD
from tests.hanami.conftest import SDK
from tests.marketplace.conftest import Orchestrator
from tests.mlbackend.labelstudio_helpers import ls_headers, make_backend

pytestmark = pytest.mark.django_db


@pytest.fixture
def failure_rate(settings):
    settings.AUTH_FAILURE_RATE = "3/min"
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"login": "1000/min"},
    }


@pytest.fixture
def hasher_calls(monkeypatch):
    """How many times the password hasher ran (tests use the MD5 hasher)."""
    calls = []
    verify, encode = MD5PasswordHasher.verify, MD5PasswordHasher.encode

    def counting_verify(self, password, encoded):
        calls.append("verify")
        return verify(self, password, encoded)

    def counting_encode(self, password, salt):
        calls.append("encode")
        return encode(self, password, salt)

    monkeypatch.setattr(MD5PasswordHasher, "verify", counting_verify)
    monkeypatch.setattr(MD5PasswordHasher, "encode", counting_encode)
    return calls


def _ip(n: int) -> str:
    return f"198.51.100.{n}"


# --- the orchestrator (marketplace) -----------------------------------------------------------


def _orch(username, password=PASSWORD, ip="198.51.100.1", **extra):
    return Orchestrator(username, password, headers={"REMOTE_ADDR": ip, **extra})


def test_orchestrator_basic_auth_is_throttled_per_client(world, failure_rate, hasher_calls):
    # Guesses for a different account each time, from one client with a random X-Forwarded-For.
    for n in range(3):
        r = _orch(f"user{n}", "guess", HTTP_X_FORWARDED_FOR=_ip(n + 100)).get("problem")
        assert r.status_code == 401
    before = len(hasher_calls)
    r = _orch(world.owner.username, HTTP_X_FORWARDED_FOR=_ip(200)).get("problem")
    assert r.status_code == 429
    assert set(r.json()) == {"Error"} and "AUTH_FAILURE_RATE" in r.json()["Error"]
    assert int(r["Retry-After"]) > 0
    assert len(hasher_calls) == before  # refused before any password hash
    # Another client is not affected.
    assert _orch(world.owner.username, ip="198.51.100.2").get("problem").status_code == 200


def test_orchestrator_basic_auth_is_throttled_per_account(world, failure_rate, hasher_calls):
    name = world.owner.username
    for n in range(3):
        assert _orch(name, "guess", ip=_ip(n + 10)).get("problem").status_code == 401
    before = len(hasher_calls)
    # From yet another address, even the right password waits: the account is being guessed.
    r = _orch(name, ip=_ip(50)).get("problem")
    assert r.status_code == 429 and set(r.json()) == {"Error"}
    assert len(hasher_calls) == before
    # Case variants of the name count as the same account.
    assert _orch(name.upper(), "guess", ip=_ip(51)).get("problem").status_code == 429
    # Other accounts from that address are not affected.
    assert _orch(world.member.username, ip=_ip(50)).get("problem").status_code == 200


def test_successes_are_not_counted_and_the_credentials_cache_stays(
    world, failure_rate, settings, hasher_calls
):
    settings.MARKETPLACE_BASIC_AUTH_CACHE_S = 60
    orch = _orch(world.owner.username)
    for _ in range(10):
        assert orch.get("problem").status_code == 200
    assert hasher_calls.count("verify") == 1  # one hash, then the remembered success
    for _ in range(2):
        assert _orch(world.owner.username, "guess").get("problem").status_code == 401
    assert orch.get("problem").status_code == 200


def test_parallel_guesses_cannot_overrun_the_rate(world, failure_rate):
    """Attempts are counted before they run: with the budget taken by checks still in flight,
    one more is refused (what a burst of parallel requests would meet)."""
    from apps.core.throttling import account_key, credential_attempt

    held = [credential_attempt(_ip(9), account=account_key("x")) for _ in range(3)]
    for attempt in held:
        attempt.__enter__()  # three checks running, none finished
    r = _orch("someone-else", "guess", ip=_ip(9)).get("problem")
    assert r.status_code == 429


# --- the main API and Hanami logins ------------------------------------------------------------


def test_api_login_failures_are_counted_per_account_across_clients(
    world, failure_rate, hasher_calls
):
    def login(password, ip):
        return APIClient().post(
            "/api/auth/token",
            {"username": "alice", "password": password},
            format="json",
            REMOTE_ADDR=ip,
        )

    for n in range(3):
        assert login("guess", _ip(n + 1)).status_code == 401
    before = len(hasher_calls)
    r = login(PASSWORD, _ip(99))
    assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMITED"
    assert "AUTH_FAILURE_RATE" in r.json()["error"]["message"]
    assert len(hasher_calls) == before


def test_hanami_login_failures_are_counted_per_client(world, failure_rate, hasher_calls):
    def login(user_id, password):
        return SDK().client.generic(
            "POST",
            "/control/v1/token",
            json.dumps({"id": user_id, "password": password}),
            content_type="",
            REMOTE_ADDR=_ip(7),
            HTTP_X_FORWARDED_FOR=f"10.0.0.{random.randint(1, 254)}",
        )

    for n in range(3):
        assert login(f"nobody{n}", "guess").status_code == 401
    before = len(hasher_calls)
    r = login("alice", PASSWORD)
    assert r.status_code == 401 and "AUTH_FAILURE_RATE" in r.json()["error"]
    assert len(hasher_calls) == before


# --- the admin login -------------------------------------------------------------------------


def test_admin_login_is_throttled(world, failure_rate, hasher_calls):
    def login(username, password, ip):
        return Client().post(
            "/admin/login/?next=/admin/",
            {"username": username, "password": password},
            REMOTE_ADDR=ip,
        )

    assert login("root", PASSWORD, _ip(1)).status_code == 302  # the admin logs in
    for n in range(3):
        r = login("root", "guess", _ip(n + 2))
        assert r.status_code == 200 and b"correct username and password" in r.content
    before = len(hasher_calls)
    r = login("root", PASSWORD, _ip(20))
    assert r.status_code == 429 and int(r["Retry-After"]) > 0
    assert b"AUTH_FAILURE_RATE" in r.content
    assert len(hasher_calls) == before
    # Per client too: guesses for many names from one address.
    for n in range(3):
        assert login(f"nobody{n}", "guess", _ip(30)).status_code == 200
    assert login("alice", PASSWORD, _ip(30)).status_code == 429


# --- Label Studio backends -------------------------------------------------------------------


def _ls_get(backend, auth, ip="198.51.100.1", route="health", **extra):
    return Client().get(f"/ml/{backend.pk}/{route}", REMOTE_ADDR=ip, **ls_headers(auth), **extra)


def test_label_studio_basic_auth_is_throttled_per_backend_and_client(world, failure_rate):
    backend = make_backend(world.project, world.owner, basic_auth=("ls-user", "pw-1234567"))
    other = make_backend(world.project, world.owner, basic_auth=("ls-user", "other-pw-99"))
    for n in range(3):
        assert _ls_get(backend, ("ls-user", "guess"), ip=_ip(n + 1)).status_code == 401
    r = _ls_get(backend, ("ls-user", "pw-1234567"), ip=_ip(40))
    assert r.status_code == 429
    assert r.json() == {"status": 429, "detail": r.json()["detail"]}
    assert "AUTH_FAILURE_RATE" in r.json()["detail"] and int(r["Retry-After"]) > 0
    # Another backend from a fresh address is not affected...
    assert _ls_get(other, ("ls-user", "other-pw-99"), ip=_ip(40)).status_code == 200
    # A client's guesses count whatever X-Forwarded-For it writes.
    for n in range(2):
        _ls_get(other, ("ls-user", "guess"), ip=_ip(41), HTTP_X_FORWARDED_FOR=_ip(n + 60))
    assert _ls_get(other, ("ls-user", "guess"), ip=_ip(41)).status_code == 401
    assert _ls_get(other, ("ls-user", "other-pw-99"), ip=_ip(41)).status_code == 429


def test_label_studio_credentials_use_a_keyed_hash_not_the_password_hasher(
    world, hasher_calls, settings
):
    backend = make_backend(world.project, world.owner, basic_auth=("ls-user", "pw-1234567"))
    stored = LabelStudioBackend.objects.get(pk=backend.pk).basic_auth_password
    assert stored.startswith("hmac-sha256$") and "pw-1234567" not in stored
    before = len(hasher_calls)
    for auth, status in ((("ls-user", "pw-1234567"), 200), (("ls-user", "wrong"), 401)):
        assert _ls_get(backend, auth).status_code == status
    assert len(hasher_calls) == before  # no password hasher on this path
    # Two backends with the same password store different values (a salt per credential).
    twin = make_backend(world.project, world.owner, basic_auth=("ls-user", "pw-1234567"))
    assert LabelStudioBackend.objects.get(pk=twin.pk).basic_auth_password != stored
    # A rotated SECRET_KEY (the old one in SECRET_KEY_FALLBACKS) keeps the credentials working.
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-" + "x" * 40
    assert _ls_get(backend, ("ls-user", "pw-1234567")).status_code == 200
    rewritten = LabelStudioBackend.objects.get(pk=backend.pk).basic_auth_password
    assert rewritten != stored and rewritten.startswith("hmac-sha256$")
    settings.SECRET_KEY_FALLBACKS = []
    assert _ls_get(backend, ("ls-user", "pw-1234567")).status_code == 200


def test_legacy_password_hashes_keep_working_and_are_rewritten(world, hasher_calls):
    backend = make_backend(world.project, world.owner, basic_auth=("ls-user", "pw-1234567"))
    legacy = make_password("pw-1234567")
    LabelStudioBackend.objects.filter(pk=backend.pk).update(basic_auth_password=legacy)
    assert _ls_get(backend, ("ls-user", "wrong")).status_code == 401
    assert LabelStudioBackend.objects.get(pk=backend.pk).basic_auth_password == legacy
    assert _ls_get(backend, ("ls-user", "pw-1234567")).status_code == 200
    rewritten = LabelStudioBackend.objects.get(pk=backend.pk).basic_auth_password
    assert rewritten.startswith("hmac-sha256$")
    before = len(hasher_calls)
    assert _ls_get(backend, ("ls-user", "pw-1234567")).status_code == 200
    assert _ls_get(backend, ("ls-user", "wrong")).status_code == 401
    assert len(hasher_calls) == before


def test_label_studio_requests_without_credentials_are_not_counted(world, failure_rate):
    backend = make_backend(world.project, world.owner, basic_auth=("ls-user", "pw-1234567"))
    for _ in range(5):
        assert _ls_get(backend, None).status_code == 401  # a probe, no guess
    r = Client().get(
        f"/ml/{backend.pk}/health",
        HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"ls-user:pw-1234567").decode(),
    )
    assert r.status_code == 200
