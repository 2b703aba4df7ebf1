"""One client-address rule for every surface: X-Forwarded-For is believed only from TRUSTED_PROXIES.

Before, DRF's throttles keyed callers by the X-Forwarded-For header whoever sent it (NUM_PROXIES
unset), so a login flood with a random header per request was never throttled; labelprop's
allowed-clients check read REMOTE_ADDR only, so it could not work behind a proxy at all.
"""

import itertools
import json
import random
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils.module_loading import import_string
from rest_framework.test import APIClient

from apps.core.clientip import client_ident, client_ip
from apps.core.throttling import ClientIdentMixin
from tests.factories import PASSWORD
from tests.hanami.conftest import SDK
from tests.mlbackend.labelprop_helpers import Napari, enable

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def _random_ip() -> str:
    return ".".join(str(random.randint(1, 254)) for _ in range(4))


@pytest.fixture
def login_rate(settings):
    """The main API / Hanami login throttle at 3 per minute; failed-check counting out of the
    way (these tests are about the per-request login throttle)."""
    settings.REST_FRAMEWORK = {
        **django_settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"login": "3/min"},
    }
    settings.AUTH_FAILURE_RATE = "1000/min"


def _api_login(**meta):
    return APIClient().post(
        "/api/auth/token", {"username": "alice", "password": PASSWORD}, format="json", **meta
    )


def _hanami_login(**meta):
    sdk = SDK()
    return sdk.client.generic(
        "POST",
        "/control/v1/token",
        json.dumps({"id": "alice", "password": PASSWORD}),
        content_type="",
        **meta,
    )


@pytest.mark.parametrize("login", [_api_login, _hanami_login], ids=["api", "hanami"])
def test_a_random_forwarded_for_does_not_escape_the_login_throttle(world, login_rate, login):
    codes = [
        login(REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR=_random_ip()).status_code
        for _ in range(20)
    ]
    assert codes[:3] == [200] * 3
    # Hanami folds 429 into 401 (its SDK knows no other code); the main API answers 429.
    throttled = 429 if login is _api_login else 401
    assert codes[3:] == [throttled] * 17
    # Another client (address) is not affected.
    assert login(REMOTE_ADDR="198.51.100.8").status_code == 200


def test_the_main_api_answers_rate_limited_in_its_envelope(world, login_rate):
    for _ in range(3):
        _api_login(REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR=_random_ip())
    response = _api_login(REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR=_random_ip())
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    assert int(response["Retry-After"]) > 0


@pytest.mark.parametrize("login", [_api_login, _hanami_login], ids=["api", "hanami"])
def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(world, login_rate, settings, login):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    # 20 different clients behind the proxy: none is throttled.
    clients = [f"203.0.113.{n}" for n in range(1, 21)]
    assert {login(HTTP_X_FORWARDED_FOR=ip).status_code for ip in clients} == {200}
    # One client, whatever it writes left of what the proxy appended: throttled after 3.
    codes = [
        login(HTTP_X_FORWARDED_FOR=f"{_random_ip()}, 192.0.2.44").status_code for _ in range(5)
    ]
    assert codes[:3] == [200] * 3 and 200 not in codes[3:]


def test_trusted_proxies_accepts_networks_and_a_comma_separated_string(world, login_rate, settings):
    settings.TRUSTED_PROXIES = "10.0.0.0/8, 127.0.0.1"
    # A chain of two trusted proxies: the client is the right-most untrusted entry.
    for n in range(6):
        ip = f"203.0.113.{n}"
        response = _api_login(REMOTE_ADDR="10.2.3.4", HTTP_X_FORWARDED_FOR=f"{ip}, 10.9.9.9")
        assert response.status_code == 200, ip


def test_client_ip_rules(settings):
    class Req:
        def __init__(self, remote, xff=None):
            self.META = {"REMOTE_ADDR": remote}
            if xff is not None:
                self.META["HTTP_X_FORWARDED_FOR"] = xff

    assert client_ip(Req("198.51.100.1", "1.2.3.4")) == "198.51.100.1"
    assert client_ip(Req("::ffff:198.51.100.1")) == "198.51.100.1"
    assert client_ip(Req("")) == "unknown"
    settings.TRUSTED_PROXIES = ["127.0.0.1", "10.0.0.0/8"]
    assert client_ip(Req("127.0.0.1", "1.2.3.4, 5.6.7.8")) == "5.6.7.8"
    assert client_ip(Req("127.0.0.1", "1.2.3.4, 5.6.7.8:1234, 10.1.1.1")) == "5.6.7.8"
    assert client_ip(Req("127.0.0.1", "[2001:db8::1]:443")) == "2001:db8::1"
    assert client_ip(Req("127.0.0.1", "10.3.3.3, 10.1.1.1")) == "10.3.3.3"
    # Garbage from further out: the last proxy is all that is known.
    assert client_ip(Req("127.0.0.1", "1.2.3.4, not-an-ip, 10.1.1.1")) == "10.1.1.1"
    assert client_ip(Req("127.0.0.1")) == "127.0.0.1"
    assert client_ip(Req("198.51.100.1", "5.6.7.8")) == "198.51.100.1"
    # IPv6 callers are counted per /64 by the throttles.
    assert client_ident(Req("2001:db8:1:2::1")) == client_ident(Req("2001:db8:1:2:ffff::9"))
    assert client_ident(Req("2001:db8:1:2::1")) != client_ident(Req("2001:db8:1:3::1"))


def test_websocket_scopes_follow_the_same_rule(settings):
    scope = {
        "type": "websocket",
        "client": ("127.0.0.1", 50000),
        "headers": [(b"x-forwarded-for", b"6.6.6.6"), (b"origin", b"http://testserver")],
    }
    assert client_ip(scope) == "127.0.0.1"
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    assert client_ip(scope) == "6.6.6.6"
    # A unix-socket peer (no address) is a proxy only when TRUSTED_PROXIES says `unix`.
    unix_scope = {**scope, "client": None}
    assert client_ip(unix_scope) == "unknown"
    settings.TRUSTED_PROXIES = ["unix"]
    assert client_ip(unix_scope) == "6.6.6.6"


def test_labelprop_allowed_clients_use_the_forwarded_client_only_from_a_trusted_proxy(
    world, settings
):
    enable(settings, world.project)
    settings.LABELPROP_ALLOWED_CLIENTS = ["192.0.2.0/24"]
    spoofing = Napari(remote_addr="198.51.100.9")
    spoofing.extra["HTTP_X_FORWARDED_FOR"] = "192.0.2.10"
    assert spoofing.check().status_code == 404  # the header of an untrusted peer is ignored
    settings.TRUSTED_PROXIES = ["198.51.100.9"]
    assert spoofing.check().status_code == 200  # the proxy's word for its client
    spoofing.extra["HTTP_X_FORWARDED_FOR"] = "192.0.2.10, 203.0.113.1"
    assert spoofing.check().status_code == 404  # the client is the right-most entry


def test_no_surface_reads_the_address_or_throttles_on_its_own():
    """Every read of REMOTE_ADDR / X-Forwarded-For goes through apps.core.clientip, and every
    throttle through apps.core.throttling (DRF's own throttles believe X-Forwarded-For)."""
    allowed = {ROOT / "apps/core/clientip.py", ROOT / "apps/core/throttling.py"}
    offenders = []
    for path in itertools.chain((ROOT / "apps").rglob("*.py"), (ROOT / "config").rglob("*.py")):
        if path in allowed:
            continue
        text = path.read_text()
        for needle in (
            "REMOTE_ADDR",
            "X_FORWARDED_FOR",
            "x-forwarded-for",
            "rest_framework.throttling",
        ):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offenders, offenders
    for dotted in django_settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_CLASSES", ()):
        assert issubclass(import_string(dotted), ClientIdentMixin), dotted
