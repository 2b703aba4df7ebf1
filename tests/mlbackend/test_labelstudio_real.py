"""Conformance with what a real Label Studio 1.23.2 sent and answered (captured against
`label-studio start`, legacy API tokens off: the default for a new organization since 1.22).

Label Studio sends its user's LEGACY token as `/setup`'s `access_token`, and with legacy tokens off
it answers that token with 401 on `/data/upload/...`: predictions on uploaded images failed
(Orchard answered /predict 502). The remedy, as label-studio-sdk does it: a personal access token
(a JWT refresh token) put in the ML backend's Extra params in Label Studio, which Label Studio
sends in `/setup`'s `extra_params`; Orchard exchanges it at `POST /api/token/refresh/` for an
access token and fetches with `Authorization: Bearer <access>`.
"""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client

from apps.mlbackend.labelstudio import fetch, runtime
from apps.mlbackend.labelstudio.fetch import FetchFailed, FetchPolicy, label_studio_authorization
from tests.mlbackend.labelstudio_helpers import (
    ls_headers,
    ls_task,
    make_backend,
    stripes_png,
)

pytestmark = pytest.mark.django_db

IMAGE_CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="choice" toName="image">'
    '<Choice value="Horizontal"/><Choice value="Vertical"/></Choices></View>'
)
LEGACY_TOKEN = "lsrealtoken1234567890abcd"
UPLOADS = {
    "/data/upload/2/5ce14d22-stripes0.png": stripes_png(False),
    "/data/upload/2/8ae1fb33-stripes1.png": stripes_png(True),
}
# Label Studio 1.23.2's answer to a legacy token when legacy tokens are off.
LEGACY_REFUSED = {
    "detail": "Authentication token no longer valid: legacy token authentication has been "
    "disabled for this organization"
}


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def jwt(token_type: str, exp: int) -> str:
    """A token shaped like Label Studio's (HS256, unverified here): header.claims.signature."""
    claims = {
        "token_type": token_type,
        "exp": exp,
        "iat": 1795376183,
        "jti": "b23f",
        "user_id": "1",
    }
    return f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}.Y1oPOIaWq_yE26pdHLkm11uSIdT6"


PAT = jwt("refresh", 8102576183)  # Label Studio's personal access tokens expire in 200 years
# Fixed, far-future expiry: a token built from the clock at collection expired on slow runs
# before the tests that use it ran (no test may depend on wall-clock time that way).
ACCESS = jwt("access", 8102576180)


class LabelStudio123:
    """Label Studio 1.23.2 with legacy tokens off: uploads need `Bearer <access token>`, and
    `POST /api/token/refresh/ {"refresh": PAT}` answers `{"access": ...}`."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append(("POST", self.path, dict(self.headers), body))
                if self.path != "/api/token/refresh/":
                    return self._answer(404, {"detail": "Not found."})
                if json.loads(body or b"{}").get("refresh") != PAT:
                    return self._answer(
                        401, {"detail": "Token is invalid or expired", "code": "token_not_valid"}
                    )
                return self._answer(200, {"access": ACCESS})

            def do_GET(self):
                server.requests.append(("GET", self.path, dict(self.headers), b""))
                auth = self.headers.get("Authorization", "")
                if auth == f"Token {LEGACY_TOKEN}":
                    return self._answer(401, LEGACY_REFUSED)
                if auth != f"Bearer {ACCESS}":
                    return self._answer(
                        401, {"detail": "Authentication credentials were not provided."}
                    )
                if self.path == "/api/projects/2/":
                    return self._answer(200, {"id": 2, "title": "Stripes"})
                if self.path not in UPLOADS:
                    return self._answer(404, {"detail": "Not found."})
                return self._answer(200, UPLOADS[self.path], "image/png")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://localhost:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _fresh_caches():
    from apps.mlbackend.labelstudio.connect import clear_check_cache

    runtime.clear_cache()
    fetch.clear_token_cache()
    clear_check_cache()
    yield
    runtime.clear_cache()
    fetch.clear_token_cache()
    clear_check_cache()


def setup_body(hostname: str, extra_params=None) -> dict:
    """`/setup` exactly as Label Studio 1.23.2 sent it (hostname: the stand-in's)."""
    return {
        "project": "2.1795376169",
        "schema": IMAGE_CONFIG,
        "hostname": hostname,
        "access_token": LEGACY_TOKEN,
        "extra_params": extra_params,
    }


def predict_body() -> dict:
    tasks = [ls_task(7 + i, {"image": path}) for i, path in enumerate(UPLOADS)]
    return {
        "tasks": tasks,
        "project": "2.1795376169",
        "label_config": IMAGE_CONFIG,
        "params": {"login": None, "password": None, "context": None},
    }


def _post(backend_id, route, body):
    return Client().post(
        f"/ml/{backend_id}/{route}",
        json.dumps(body),
        content_type="application/json",
        **ls_headers(),
    )


def test_legacy_token_refused_by_label_studio_fails_the_connection_naming_the_remedy(world):
    with LabelStudio123() as ls:
        backend = make_backend(
            world.project, world.owner, config=IMAGE_CONFIG, allow_private_networks=True
        )
        r = _post(backend.pk, "setup", setup_body(ls.url))
        # Label Studio shows /setup's error in its connect dialog, before any prediction.
        assert r.status_code == 400
        detail = r.json()["detail"]
        assert r.json()["status"] == 400 and "refused the access token" in detail
        assert '"label_studio_api_key"' in detail and "legacy" in detail
        assert ls.requests[0][1] == "/api/projects/2/"
        assert ls.requests[0][2]["Authorization"] == f"Token {LEGACY_TOKEN}"
        backend.refresh_from_db()
        assert backend.access_token == "" and backend.label_studio_url == ""


def test_legacy_token_refused_at_predict_time_answers_each_task_naming_the_remedy(
    world, monkeypatch
):
    from apps.mlbackend.labelstudio import services

    with LabelStudio123() as ls:
        backend = make_backend(
            world.project, world.owner, config=IMAGE_CONFIG, allow_private_networks=True
        )
        monkeypatch.setattr(services, "check_label_studio", lambda **kwargs: None)
        assert _post(backend.pk, "setup", setup_body(ls.url)).status_code == 200
        r = _post(backend.pk, "predict", predict_body())
        assert r.status_code == 200
        for item in r.json()["results"]:
            detail = item["error"]
            assert item["result"] == [] and "refused the access token" in detail
            assert "HTTP" not in detail and "/data/upload" not in detail  # server log only
            assert '"label_studio_api_key"' in detail and "legacy" in detail


def test_personal_access_token_in_extra_params_is_exchanged_and_sent_as_bearer(world):
    with LabelStudio123() as ls:
        backend = make_backend(
            world.project, world.owner, config=IMAGE_CONFIG, allow_private_networks=True
        )
        body = setup_body(ls.url, {"label_studio_api_key": PAT})
        r = _post(backend.pk, "setup", body)
        assert r.status_code == 200 and r.json() == {"model_version": "1.0.0"}
        backend.refresh_from_db()
        assert backend.access_token == PAT
        for _ in range(2):  # the access token is cached: one exchange for both batches
            r = _post(backend.pk, "predict", predict_body())
            assert r.status_code == 200, r.content
            assert len(r.json()["results"]) == 2
        refreshes = [req for req in ls.requests if req[0] == "POST"]
        assert len(refreshes) == 1
        _method, path, headers, sent = refreshes[0]
        assert path == "/api/token/refresh/" and json.loads(sent) == {"refresh": PAT}
        assert headers["Content-Type"] == "application/json"
        uploads = [req for req in ls.requests if req[0] == "GET" and "/data/" in req[1]]
        assert sorted(p for _m, p, _h, _b in uploads) == sorted(list(UPLOADS) * 2)
        assert all(h["Authorization"] == f"Bearer {ACCESS}" for _m, _p, h, _b in uploads)


def test_a_setup_without_the_key_goes_back_to_label_studios_token(world, monkeypatch):
    from apps.mlbackend.labelstudio import services

    monkeypatch.setattr(services, "check_label_studio", lambda **kwargs: None)
    backend = make_backend(world.project, world.owner, config=IMAGE_CONFIG)
    _post(backend.pk, "setup", setup_body("http://localhost:8767", {"label_studio_api_key": PAT}))
    _post(backend.pk, "setup", setup_body("http://localhost:8767", {"other": 1}))
    backend.refresh_from_db()
    assert backend.access_token == LEGACY_TOKEN


@pytest.mark.parametrize(
    ("extra_params", "field"),
    [
        ({"label_studio_api_key": ""}, "extra_params"),
        ({"label_studio_api_key": 12}, "extra_params"),
        ({"label_studio_api_key": "x" * 501}, "access_token"),
    ],
)
def test_bad_api_keys_answer_400_and_change_nothing(world, extra_params, field):
    backend = make_backend(world.project, world.owner, config=IMAGE_CONFIG)
    r = _post(backend.pk, "setup", setup_body("http://localhost:8767", extra_params))
    assert r.status_code == 400 and r.json()["status"] == 400
    assert field in r.json()["detail"] or "Label Studio token" in r.json()["detail"]
    backend.refresh_from_db()
    assert backend.access_token == "" and backend.label_studio_url == ""


def test_token_kinds_and_a_refused_exchange():
    base = {"label_studio_url": "http://ls.example", "allow_private_networks": True}
    assert label_studio_authorization(FetchPolicy(**base)) == {}
    legacy = FetchPolicy(**base, access_token=LEGACY_TOKEN)
    assert label_studio_authorization(legacy) == {"Authorization": f"Token {LEGACY_TOKEN}"}
    access = FetchPolicy(**base, access_token=ACCESS)  # an access JWT goes as it is
    assert label_studio_authorization(access) == {"Authorization": f"Bearer {ACCESS}"}
    assert label_studio_authorization(FetchPolicy(**base, access_token="a.b.c")) == {
        "Authorization": "Token a.b.c"
    }
    with LabelStudio123() as ls:
        wrong = FetchPolicy(
            label_studio_url=ls.url,
            allow_private_networks=True,
            access_token=jwt("refresh", 8102576100),  # not the PAT Label Studio knows
        )
        with pytest.raises(FetchFailed, match="label_studio_api_key") as failed:
            label_studio_authorization(wrong)
        assert "HTTP 401 to /api/token/refresh/" in failed.value.detail
