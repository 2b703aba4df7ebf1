"""Every refusal the napari client can meet ends its loop with a message it shows (issue #17):
the client's own request sequence (`RealClient`: requests over HTTP to a live server, as
napari-labelprop-remote sends them) for the 400, 403, 404, 413 and 500 paths of /inference
and /training. Before, a 403 or 413 text was taken for a token and polled every 5 s forever."""

from __future__ import annotations

import pytest

from apps.core.tenancy import Role
from apps.mlbackend.models import LabelpropSession, LabelpropVolume
from apps.tasks.models import Task
from tests.mlbackend.labelprop_helpers import RealClient, ServerSideError, enable, small_volume

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def volume():
    img, _labels, mask = small_volume()
    return img, mask


def _shown(call) -> str:
    with pytest.raises(ServerSideError) as caught:
        call()
    return str(caught.value)


def _nothing_but_failed_sessions() -> bool:
    return not (
        LabelpropSession.objects.exclude(state="failed").exists()
        or LabelpropVolume.objects.exists()
        or Task.objects.exists()
    )


def test_400_a_body_that_is_no_npz(world, settings, live_server, volume):
    enable(settings, world.project)
    img, mask = volume
    client = RealClient(live_server.url)
    message = _shown(lambda: client.inference(img, mask, checkpoint="x", arrays_bytes=b"PK\0"))
    assert message.startswith("Server-side error: Session failed: Request refused (400): ")
    assert "npz" in message
    assert _nothing_but_failed_sessions()


def test_403_a_read_only_service_identity(world, settings, live_server, volume):
    enable(settings, world.project, role=Role.VIEWER)
    img, mask = volume
    client = RealClient(live_server.url)
    for call in (
        lambda: client.inference(img, mask, checkpoint="x.ckpt"),
        lambda: client.training(img, mask, name="mine"),
    ):
        message = _shown(call)
        assert "Request refused (403)" in message and "read-only" in message
    assert LabelpropSession.objects.count() == 2 and _nothing_but_failed_sessions()


def test_404_the_surface_is_off_or_the_address_not_allowed(world, settings, live_server, volume):
    img, mask = volume
    client = RealClient(live_server.url)
    # Off: every route answers the same 404 text, so the client's loop ends on it at once.
    assert _shown(lambda: client.inference(img, mask, checkpoint="x")) == (
        "Server-side error: Not found."
    )
    enable(settings, world.project)
    settings.LABELPROP_ALLOWED_CLIENTS = ["10.9.0.0/16"]
    assert _shown(lambda: client.training(img, mask)) == "Server-side error: Not found."
    assert not LabelpropSession.objects.exists()


def test_413_a_volume_over_the_limit(world, settings, live_server, volume):
    enable(settings, world.project)
    settings.LABELPROP_MAX_VOXELS = 100
    img, mask = volume
    client = RealClient(live_server.url)
    message = _shown(lambda: client.training(img, mask, name="big"))
    assert "Request refused (413)" in message and "LABELPROP_MAX_VOXELS" in message
    assert _nothing_but_failed_sessions()


def test_500_an_unexpected_server_error(world, settings, live_server, volume, monkeypatch):
    from apps.mlbackend.labelprop import services

    def broken(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services, "session_start", broken)
    enable(settings, world.project)
    img, mask = volume
    client = RealClient(live_server.url)
    message = _shown(lambda: client.inference(img, mask, checkpoint="x.ckpt"))
    assert message == "Server-side error: Session failed: Request refused (500): Internal error."
    assert "disk on fire" not in message  # the detail stays in the server's log


def test_a_request_that_cannot_run_still_fails_its_session(world, settings, live_server, volume):
    enable(settings, world.project)
    img, mask = volume
    client = RealClient(live_server.url)
    message = _shown(lambda: client.inference(img, mask, checkpoint="missing.ckpt"))
    assert message.startswith("Server-side error: Session failed: checkpoint: no checkpoint")


def test_the_early_413_hook_makes_a_token_only_for_the_surface_s_callers(world, settings):
    from django.test import RequestFactory

    from apps.mlbackend.labelprop.views import body_too_large

    request = RequestFactory().post("/inference", REMOTE_ADDR="127.0.0.1")
    assert body_too_large(request, "labelprop-inference", "too big") is None  # surface off
    enable(settings, world.project)
    token = body_too_large(request, "labelprop-training", "too big")
    session = LabelpropSession.objects.get(pk=token)
    assert session.state == "failed" and session.error == "Request refused (413): too big"
    assert body_too_large(request, "labelprop-check", "too big") is None  # not a session route
    outsider = RequestFactory().post("/inference", REMOTE_ADDR="10.1.2.3")
    assert body_too_large(outsider, "labelprop-inference", "too big") is None
    browser = RequestFactory().post("/inference", REMOTE_ADDR="127.0.0.1", HTTP_ORIGIN="http://e.x")
    assert body_too_large(browser, "labelprop-inference", "too big") is None
    assert LabelpropSession.objects.count() == 1


def test_413_over_upload_max_bytes_before_the_view(world, settings, live_server, volume):
    enable(settings, world.project)
    settings.UPLOAD_MAX_BYTES = 1000
    img, mask = volume
    client = RealClient(live_server.url)
    message = _shown(lambda: client.inference(img, mask, checkpoint="x.ckpt"))
    assert "Request refused (413)" in message and "UPLOAD_MAX_BYTES" in message


def test_a_checkpoint_name_is_shown_back_as_given_over_http(world, settings, live_server, tmp_path):
    """`send_ckpt(path)`: requests names the part after the file (urllib3 encodes non-ASCII
    names); `/list_ckpts` shows the name unchanged and the widget's inference can use it."""
    import requests

    from tests.mlbackend.labelprop_helpers import checkpoint_bytes

    enable(settings, world.project)
    path = tmp_path / "ünï modèle.ckpt"
    path.write_bytes(checkpoint_bytes())
    url = live_server.url + "/send_ckpt"
    with path.open("rb") as handle:  # the widget opens it in text mode: bytes are what it sends
        assert requests.post(url, files={"ckpt": handle}, timeout=10).text == "ok"
    listed = requests.get(live_server.url + "/list_ckpts", timeout=10).text
    assert listed.split(",") == ["ünï modèle.ckpt"]
    with path.open("rb") as handle:  # the same name again: refused, the widget says "not sent"
        assert requests.post(url, files={"ckpt": handle}, timeout=10).text != "ok"
