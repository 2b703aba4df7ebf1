"""Connecting fails at connect time, not silently later: /setup checks the token Label Studio sent
(or the personal access token of Extra params) against Label Studio's API, and that Orchard may
and can reach Label Studio when the project's task data must be downloaded. Label Studio shows
/setup's error in its connect dialog, so each message names the fix."""

import socket

import pytest

from apps.mlbackend.labelstudio.connect import clear_check_cache
from apps.mlbackend.models import LabelStudioBackend
from tests.mlbackend.labelstudio_helpers import (
    IMAGE_CONFIG,
    LS_TOKEN,
    TEXT_CONFIG,
    LabelStudioClient,
    TaskDataServer,
    json_bytes,
    make_backend,
    setup_body,
)

pytestmark = pytest.mark.django_db

PROJECT = {"/api/projects/7/": json_bytes({"id": 7, "title": "Stripes"})}


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_check_cache()
    yield
    clear_check_cache()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_token_label_studio_accepts_connects_and_is_checked_once(world):
    with TaskDataServer(PROJECT, require_token=LS_TOKEN) as server:
        backend = make_backend(world.project, world.owner, allow_private_networks=True)
        ls = LabelStudioClient(backend.pk)
        for _ in range(3):  # Label Studio calls /setup before every prediction batch
            r = ls.post("setup", setup_body(IMAGE_CONFIG, server.url))
            assert r.status_code == 200 and r.json() == {"model_version": "1.0.0"}
    assert [path for path, _ in server.requests] == ["/api/projects/7/"]
    assert server.requests[0][1]["Authorization"] == f"Token {LS_TOKEN}"


@pytest.mark.parametrize("config", [IMAGE_CONFIG, TEXT_CONFIG])
def test_a_refused_token_fails_the_connection_naming_the_fix(world, config):
    with TaskDataServer(PROJECT, require_token="another-token") as server:
        backend = make_backend(
            world.project, world.owner, config=config, allow_private_networks=True
        )
        r = LabelStudioClient(backend.pk).post("setup", setup_body(config, server.url))
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "refused the access token" in detail and '"label_studio_api_key"' in detail
    assert "Personal Access Token" in detail
    stored = LabelStudioBackend.objects.get(pk=backend.pk)
    assert (stored.label_studio_url, stored.access_token) == ("", "")


def test_a_refused_personal_access_token_names_extra_params(world):
    with TaskDataServer(PROJECT, require_token=LS_TOKEN) as server:
        backend = make_backend(world.project, world.owner, allow_private_networks=True)
        body = setup_body(IMAGE_CONFIG, server.url)
        body["extra_params"] = {"label_studio_api_key": "not-the-right-one"}
        r = LabelStudioClient(backend.pk).post("setup", body)
    assert r.status_code == 400
    assert "personal access token given in Extra params" in r.json()["detail"]


def test_a_loopback_label_studio_without_the_allowance_names_the_settings(world):
    with TaskDataServer(PROJECT, require_token=LS_TOKEN) as server:
        image = make_backend(world.project, world.owner)
        r = LabelStudioClient(image.pk).post("setup", setup_body(IMAGE_CONFIG, server.url))
        assert r.status_code == 400
        detail = r.json()["detail"]
        assert "allow_private_networks" in detail and "LABEL_STUDIO_HOST" in detail
        # A text project downloads nothing: it connects (its texts come inline).
        text = make_backend(world.project, world.owner, config=TEXT_CONFIG)
        r = LabelStudioClient(text.pk).post("setup", setup_body(TEXT_CONFIG, server.url))
        assert r.status_code == 200


def test_an_unreachable_label_studio_fails_within_setups_time(world, settings):
    settings.LABELSTUDIO_SETUP_CHECK_TIMEOUT_S = 0.5
    credentials = ("ls", "a-backend-password")
    backend = make_backend(
        world.project, world.owner, allow_private_networks=True, basic_auth=credentials
    )
    ls = LabelStudioClient(backend.pk, credentials)
    closed = f"http://127.0.0.1:{_closed_port()}"
    r = ls.post("setup", setup_body(IMAGE_CONFIG, closed))
    assert r.status_code == 400 and "cannot reach Label Studio" in r.json()["detail"]
    # A Label Studio that does not answer (held a minute): /setup answers on its own timeout,
    # while Label Studio still holds the request.
    with TaskDataServer(PROJECT, hold=lambda path: True) as server:
        r = ls.post("setup", setup_body(IMAGE_CONFIG, server.url))
        assert not server.release.is_set() and server.requests  # it asked, then gave up
        server.release.set()
    assert r.status_code == 400 and "LABEL_STUDIO_HOST" in r.json()["detail"]


def test_no_port_oracle_on_an_open_backend_that_may_fetch_from_private_networks(world):
    """Anyone may call /setup of a backend without credentials: when it may fetch from private
    networks, a closed internal port and an open one answer alike (fetch errors do too)."""
    backend = make_backend(world.project, world.owner, allow_private_networks=True)
    ls = LabelStudioClient(backend.pk)
    closed = ls.post("setup", setup_body(IMAGE_CONFIG, f"http://127.0.0.1:{_closed_port()}"))
    with TaskDataServer({}) as server:
        open_port = ls.post("setup", setup_body(IMAGE_CONFIG, server.url))
    assert closed.status_code == open_port.status_code == 200
