"""JWT auth through the real HTTP surface: obtain, refresh with rotation, logout, switch,
the raw X-Auth-Token header (the Hanami gateway's, not the main API's), tampered and expired
tokens, and login throttling."""

from datetime import timedelta

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from tests.conftest import client_for
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def _login(username, password=PASSWORD, **extra):
    return APIClient().post(
        "/api/auth/token", {"username": username, "password": password, **extra}, format="json"
    )


def test_login_returns_a_pair_scoped_to_the_first_project(world):
    response = _login("alice")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["project_id"] == world.project.pk
    assert AccessToken(data["access"])["project_id"] == world.project.pk
    assert data["user"]["username"] == "alice"
    me = APIClient()
    me.credentials(HTTP_AUTHORIZATION=f"Bearer {data['access']}")
    assert me.get("/api/auth/me").json()["data"]["username"] == "alice"


def test_wrong_password_is_unauthorized_in_the_envelope(world):
    response = _login("alice", "nope")
    assert response.status_code == 401
    assert response.json() == {
        "status": "error",
        "error": {"code": "UNAUTHORIZED", "message": "Invalid username or password."},
    }


def test_login_attempts_are_throttled(world):
    codes = [_login("alice", "wrong").status_code for _ in range(6)]
    assert codes[:5] == [401] * 5
    assert codes[5] == 429
    response = _login("alice")
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    assert "Retry-After" in response.headers


def test_refresh_rotates_and_blacklists_the_old_token(world):
    pair = _login("alice").json()["data"]
    first = APIClient().post("/api/auth/token/refresh", {"refresh": pair["refresh"]}, format="json")
    assert first.status_code == 200
    rotated = first.json()["data"]
    assert rotated["refresh"] != pair["refresh"]
    assert rotated["project_id"] == world.project.pk
    again = APIClient().post("/api/auth/token/refresh", {"refresh": pair["refresh"]}, format="json")
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "UNAUTHORIZED"


def test_logout_blacklists_the_refresh_token(world):
    pair = _login("alice").json()["data"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    assert (
        client.post("/api/auth/logout", {"refresh": pair["refresh"]}, format="json").status_code
        == 204
    )
    refresh = APIClient().post(
        "/api/auth/token/refresh", {"refresh": pair["refresh"]}, format="json"
    )
    assert refresh.status_code == 401


def test_logout_refuses_another_users_refresh_token(world):
    victim = _login("bob").json()["data"]
    response = client_for(world.owner).post(
        "/api/auth/logout", {"refresh": victim["refresh"]}, format="json"
    )
    assert response.status_code == 401
    ok = APIClient().post("/api/auth/token/refresh", {"refresh": victim["refresh"]}, format="json")
    assert ok.status_code == 200


def test_switch_project_issues_a_token_for_a_member_project_only(world):
    client = client_for(world.outsider)
    response = client.post(
        "/api/auth/switch", {"project_id": world.other_project.pk}, format="json"
    )
    assert response.status_code == 200
    assert AccessToken(response.json()["data"]["access"])["project_id"] == world.other_project.pk
    foreign = client.post("/api/auth/switch", {"project_id": world.project.pk}, format="json")
    assert foreign.status_code == 404


def test_the_raw_x_auth_token_header_is_the_hanami_gateways_only(world):
    token = _login("alice").json()["data"]["access"]
    client = APIClient()
    client.credentials(HTTP_X_AUTH_TOKEN=token)
    assert client.get("/control/v1/dataset/all").status_code == 200
    refused = client.get("/api/auth/me")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize("header", ["HTTP_AUTHORIZATION", "HTTP_X_AUTH_TOKEN"])
def test_tampered_and_expired_tokens_are_unauthorized(world, header):
    """On the main API (Bearer) and on the Hanami gateway (raw X-Auth-Token)."""
    token = _login("alice").json()["data"]["access"]
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[::-1]}"
    expired = AccessToken.for_user(world.owner)
    expired.set_exp(lifetime=-timedelta(minutes=1))
    for bad in (tampered, str(expired), "garbage"):
        client = APIClient()
        if header == "HTTP_AUTHORIZATION":
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {bad}")
            response = client.get("/api/projects")
            assert response.status_code == 401, bad
            assert response.json()["error"]["code"] == "UNAUTHORIZED"
        else:
            client.credentials(HTTP_X_AUTH_TOKEN=bad)
            response = client.get("/control/v1/dataset/all")
            assert response.status_code == 401, bad
            assert response.json() == {"error": "Token is invalid or expired."}


def test_anonymous_requests_are_unauthorized(world):
    response = APIClient().get("/api/projects")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_inactive_users_cannot_use_their_tokens(world):
    client = client_for(world.member)
    world.member.is_active = False
    world.member.save()
    assert client.get("/api/projects").status_code == 401
