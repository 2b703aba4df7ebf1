"""The labelprop surface against napari-labelprop-remote's exact requests: every route, its
encodings (npz multipart in, plain-text tokens and comma-joined lists out, npz bytes back),
off by default, and bad input answered in the protocol's own terms."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch

from apps.core.tenancy import Role
from apps.mlbackend.models import LabelpropCheckpoint, LabelpropSession, LabelpropVolume
from apps.tasks.models import Task
from tests.mlbackend.labelprop_helpers import (
    Napari,
    checkpoint_bytes,
    enable,
    load_npz,
    md5,
    multipart,
    npz_bytes,
    refusal,
    run_session_task,
    small_volume,
)

pytestmark = pytest.mark.django_db

ROUTES = [
    ("GET", "/check"),
    ("GET", "/list_ckpts"),
    ("GET", "/list_hash"),
    ("GET", "/get_ckpt_dir"),
    ("POST", "/set_ckpt_dir?ckpt_dir=x"),
    ("POST", "/send_ckpt"),
    ("POST", "/inference"),
    ("POST", "/training"),
    ("GET", "/get_session_list"),
    ("GET", "/download_inference?token=" + str(uuid.uuid4())),
    ("POST", "/download_inference?token=" + str(uuid.uuid4())),
    ("GET", "/get_session_info?token=" + str(uuid.uuid4())),
]


@pytest.fixture(autouse=True)
def _no_heartbeat_thread(settings):
    # Tasks run inside the test's transaction here (run_session_task), where a heartbeat thread
    # with its own connection could not see them; the worker test covers heartbeats.
    settings.TASK_HEARTBEAT_INTERVAL_S = 3600


@pytest.fixture
def napari(world, settings) -> Napari:
    enable(settings, world.project)
    return Napari()


@pytest.fixture
def stored_checkpoint(napari) -> str:
    assert napari.send_ckpt("base.ckpt", checkpoint_bytes()).content == b"ok"
    return "base.ckpt"


def _text(response) -> str:
    assert response["Content-Type"].startswith("text/plain"), response["Content-Type"]
    return response.content.decode()


# --- off by default, bound when on ---------------------------------------------------------------


@pytest.mark.parametrize(("method", "url"), ROUTES)
def test_off_by_default_every_route_is_404(world, method, url):
    response = Napari().client.generic(method, url, b"", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 404
    assert LabelpropSession.objects.count() == 0


def test_only_the_allowed_client_addresses_are_answered(napari, settings):
    assert Napari(remote_addr="10.1.2.3").check().status_code == 404
    assert Napari(remote_addr="::1").check().status_code == 200
    settings.LABELPROP_ALLOWED_CLIENTS = ["10.1.0.0/16"]
    assert Napari(remote_addr="10.1.2.3").check().status_code == 200
    assert napari.check().status_code == 404  # 127.0.0.1 is no longer listed


def test_enabled_but_misconfigured_answers_503(world, settings):
    settings.LABELPROP_ENABLED = True
    response = Napari().check()
    assert response.status_code == 503 and b"LABELPROP_PROJECT" in response.content
    settings.LABELPROP_PROJECT = world.project.pk
    settings.LABELPROP_USER = world.outsider.username  # exists, but not a member of A
    response = Napari().check()
    assert response.status_code == 503 and b"not a member" in response.content


def test_a_read_only_service_identity_cannot_write(world, settings):
    enable(settings, world.project, role=Role.VIEWER)
    napari = Napari()
    img, _labels, mask = small_volume()
    assert napari.check().status_code == 200
    assert napari.get("list_ckpts").status_code == 200
    assert napari.send_ckpt("x.ckpt", checkpoint_bytes()).status_code == 403
    assert napari.set_ckpt_dir("other").status_code == 403
    response = napari.inference(img, mask, checkpoint="x.ckpt")
    assert response.status_code == 403
    assert "read-only" in refusal(napari, response)  # the client shows it, never polls forever
    # The refusal is a failed session, nothing else: no volume, no files, no task.
    assert LabelpropSession.objects.get().state == "failed"
    assert LabelpropVolume.objects.count() == Task.objects.count() == 0


# --- the routes ----------------------------------------------------------------------------------


def test_check_and_empty_lists(napari):
    response = napari.check()
    assert response.status_code == 200 and _text(response) == "Hello World!"
    for route in ("list_ckpts", "list_hash", "get_session_list"):
        response = napari.get(route)
        assert response.status_code == 200 and _text(response) == ""
    assert _text(napari.get("get_ckpt_dir")) == "default"


def test_inference_session_from_request_to_download(napari, world, stored_checkpoint):
    img, labels, mask = small_volume()
    assert napari.list_ckpts() == ["base.ckpt"]
    response = napari.inference(img, mask, z_axis=0, checkpoint="base.ckpt")
    assert response.status_code == 200
    token = _text(response)
    assert str(uuid.UUID(token)) == token
    assert not napari.session_exists(token)
    assert napari.download(token).status_code == 409  # not finished yet

    task = run_session_task(token)
    assert task.kind == "labelprop_propagate" and task.state == "finished", task.error
    assert task.project_id == world.project.pk
    if not torch.cuda.is_available():  # the client asks for "cuda" by default
        device = task.events.get(kind="device").data
        assert device == {"requested": "cuda", "used": "cpu"}
    assert napari.session_exists(token)
    download = napari.download(token)
    assert download.status_code == 200
    result = load_npz(b"".join(download.streaming_content))
    assert sorted(result) == ["Y_down", "Y_fused", "Y_up"]
    for array in result.values():
        assert array.shape == img.shape and array.dtype == np.uint8
    for z in range(0, img.shape[0], 3):  # the annotated slices come back unchanged
        np.testing.assert_array_equal(result["Y_fused"][z], mask[z])
    assert set(np.unique(result["Y_fused"])) <= {0, 1, 2}

    # The volume is kept by hash: the client now sends only the mask.
    assert napari.list_hash() == [md5(img)]
    # A path names the checkpoint of that name in the project's directory, nothing on disk.
    again = napari.inference(img, mask, checkpoint="/home/me/ckpts/base.ckpt", gpu=False)
    token2 = _text(again)
    assert LabelpropVolume.objects.count() == 1
    run_session_task(token2)
    second = load_npz(b"".join(napari.download(token2).streaming_content))
    np.testing.assert_array_equal(second["Y_fused"], result["Y_fused"])

    info = napari.session_info(token)
    assert info.status_code == 200 and info["Content-Type"] == "application/json"
    assert json.loads(info.content) == {
        "z_axis": 0,
        "label": 0,
        "checkpoint": "base.ckpt",
        "criteria": "ncc",
        "reduction": "none",
        "device": "cuda",
    }
    assert "hash" not in json.loads(napari.session_info(token2).content)


def test_training_stores_a_checkpoint_then_inference_uses_it(napari):
    img, _labels, mask = small_volume()
    response = napari.training(img, mask, shape=32, max_epochs=2, checkpoint_name="mine")
    token = _text(response)
    task = run_session_task(token)
    assert task.kind == "labelprop_train" and task.state == "finished", task.error
    assert napari.list_ckpts() == ["mine.ckpt"]
    trained = load_npz(b"".join(napari.download(token).streaming_content))
    assert trained["Y_up"].shape == img.shape
    events = list(task.events.filter(kind="epoch").values_list("data", flat=True))
    assert [e["epoch"] for e in events] == [1, 2]
    checkpoint = LabelpropCheckpoint.objects.get(name="mine.ckpt")
    assert checkpoint.metadata["volume_hash"] == md5(img) and checkpoint.metadata["epochs"] == 2

    # Reuse: propagate with it, and train again from it (same name: versioned, never replaced).
    token2 = _text(napari.inference(img, mask, checkpoint="mine.ckpt", label=1))
    assert run_session_task(token2).state == "finished"
    only_one = load_npz(b"".join(napari.download(token2).streaming_content))
    assert set(np.unique(only_one["Y_fused"])) <= {0, 1}
    token3 = _text(
        napari.training(
            img,
            mask,
            pretrained_checkpoint="mine.ckpt",
            shape=32,
            max_epochs=1,
            checkpoint_name="mine.ckpt",
        )
    )
    assert run_session_task(token3).state == "finished"
    assert napari.list_ckpts() == ["mine-2.ckpt", "mine.ckpt"]
    again = LabelpropCheckpoint.objects.get(name="mine-2.ckpt")
    assert again.metadata["pretrained"] == "mine.ckpt"
    assert LabelpropSession.objects.get(pk=token3).summary["checkpoint"] == "mine-2.ckpt"
    assert LabelpropCheckpoint.objects.get(name="mine.ckpt").metadata["epochs"] == 2  # intact


def test_training_without_a_name_gets_one(napari):
    img, _labels, mask = small_volume()
    token = _text(napari.training(img, mask, shape=32, max_epochs=1))
    run_session_task(token)
    (name,) = napari.list_ckpts()
    assert name.startswith("labelprop-") and name.endswith(".ckpt") and token[:8] in name


def test_checkpoint_directories_stay_inside_project_storage(napari, stored_checkpoint):
    assert napari.list_ckpts() == ["base.ckpt"]
    for bad in ("..", "", "/", "C:", "~", "./.."):
        response = napari.set_ckpt_dir(bad)
        assert response.status_code == 400, bad
        assert "Unallowed checkpoint directory" in _text(response)
    assert _text(napari.get("get_ckpt_dir")) == "default"
    assert _text(napari.set_ckpt_dir("team-2")) == "ok"
    assert _text(napari.get("get_ckpt_dir")) == "team-2"
    assert napari.list_ckpts() == [""]  # empty: "".split(",")
    assert _text(napari.set_ckpt_dir("default")) == "ok"
    assert napari.list_ckpts() == ["base.ckpt"]
    # What the widget sends, upstream-style server paths: their last part names a location in
    # the project's storage ("ok", as the widget expects), never the server path itself.
    for path, name in [
        ("/home/me/label_prop_checkpoints", "label_prop_checkpoints"),
        ("~/ckpts/", "ckpts"),
        ("C:\\Users\\me\\ckpts", "ckpts"),
        ("/etc", "etc"),
        ("../default", "default"),
    ]:
        assert _text(napari.set_ckpt_dir(path)) == "ok", path
        assert _text(napari.get("get_ckpt_dir")) == name
    assert napari.list_ckpts() == ["base.ckpt"]  # back in "default"


def test_send_ckpt_accepts_only_labelprop_checkpoints(napari, tmp_path):
    pickled = b"\x80\x04\x95 a torch/lightning pickle"
    response = napari.send_ckpt("upstream.ckpt", pickled)
    assert response.status_code == 400 and "not a labelprop checkpoint" in _text(response)
    assert LabelpropCheckpoint.objects.count() == 0


def test_checkpoint_names_are_kept_as_given_and_never_overwritten(napari):
    first, second = checkpoint_bytes(seed=0), checkpoint_bytes(seed=1)
    for name in ("ünï.ckpt", "my model v2.ckpt", "plain"):
        assert napari.send_ckpt(name, first).content == b"ok", name
    assert napari.list_ckpts() == ["my model v2.ckpt", "plain.ckpt", "ünï.ckpt"]
    # A duplicate is refused (the widget says "Checkpoint not sent"); the stored one is intact.
    response = napari.send_ckpt("ünï.ckpt", second)
    assert response.status_code == 400 and "already" in _text(response)
    stored = LabelpropCheckpoint.objects.get(name="ünï.ckpt")
    from apps.mlbackend.labelprop import storage

    assert storage.checkpoint_path(stored).read_bytes() == first
    # A comma cannot be listed by /list_ckpts: refused, never silently rewritten.
    response = napari.send_ckpt("a,b.ckpt", first)
    assert response.status_code == 400 and "comma" in _text(response)
    assert LabelpropCheckpoint.objects.count() == 3
    # Inference names it exactly as listed.
    img, _labels, mask = small_volume()
    token = _text(napari.inference(img, mask, checkpoint="ünï.ckpt", gpu=False))
    assert run_session_task(token).state == "finished"


# --- bad input -----------------------------------------------------------------------------------


def _only_refusals():
    return (
        not LabelpropSession.objects.exclude(state="failed").exists()
        and LabelpropVolume.objects.count() == 0
        and Task.objects.count() == 0
    )


@pytest.mark.parametrize("route", ["inference", "training"])
def test_malformed_requests_are_refused_with_a_short_text(napari, route, settings):
    params = json.dumps({"z_axis": 0, "checkpoint": "x.ckpt"}).encode()
    cases = {
        "not an npz": multipart({"arrays": b"hello", "params": params}),
        "not json": multipart({"arrays": npz_bytes(mask=np.zeros(2)), "params": b"{nope"}),
        "json, not an object": multipart({"arrays": npz_bytes(mask=np.zeros(2)), "params": b"[]"}),
        "no arrays": multipart({"params": params}),
        "no params": multipart({"arrays": npz_bytes(mask=np.zeros(2))}),
        "pickled object array": multipart(
            {"arrays": npz_bytes(mask=np.array([{"a": 1}], dtype=object)), "params": params}
        ),
    }
    boundary = uuid.uuid4().hex
    cases["arrays as a plain field"] = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="arrays"\r\n\r\nxyz\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{{}}\r\n'
            f"--{boundary}--\r\n"
        ).encode(),
        f"multipart/form-data; boundary={boundary}",
    )
    for what, (body, content_type) in cases.items():
        response = napari.client.generic("POST", "/" + route, body, content_type)
        assert response.status_code == 400, (what, response.content)
        reason = refusal(napari, response)  # a token the client finds, then the reason
        assert len(reason) < 400 and "<html" not in reason
    response = napari.client.generic("POST", "/" + route, b"{}", "application/json")
    assert response.status_code == 415
    # Sizes are checked from the zip's headers before anything is decompressed.
    settings.LABELPROP_MAX_VOXELS = 100
    big = npz_bytes(img=np.zeros((40, 40, 40), "float32"))
    response = napari.client.generic(
        "POST", "/" + route, *multipart({"arrays": big, "params": params})
    )
    assert response.status_code == 413 and "LABELPROP_MAX_VOXELS" in refusal(napari, response)
    assert _only_refusals()


def _failed(napari, response) -> str:
    """A request the client could send that cannot run: a token whose session failed, and the
    reason as the short text of /download_inference."""
    assert response.status_code == 200
    token = _text(response)
    assert napari.session_exists(token)
    download = napari.download(token)
    assert download.status_code == 409
    text = _text(download)
    assert text.startswith("Session failed: ")
    with pytest.raises(Exception):  # noqa: B017 - the client's np.load fails: it shows the text
        load_npz(download.content)
    return text


def test_requests_that_cannot_run_fail_their_session_with_the_reason(napari, stored_checkpoint):
    img, _labels, mask = small_volume()
    cases = [
        (napari.inference(img, mask[:, :, :-1], checkpoint="base.ckpt"), "does not match"),
        (napari.inference(img[0], mask[0], checkpoint="base.ckpt"), "3D"),
        (napari.inference(img, np.zeros_like(mask), checkpoint="base.ckpt"), "annotate"),
        (napari.inference(img, mask, checkpoint="missing.ckpt"), "no checkpoint named"),
        (napari.inference(img, mask, checkpoint=""), "choose a checkpoint"),
        (napari.inference(img, mask, checkpoint="base.ckpt", z_axis=3), "z_axis"),
        (napari.inference(img, mask, checkpoint="base.ckpt", criteria="max"), "criteria"),
        (
            napari.post_arrays(
                "inference", {"mask": mask}, {"hash": "0" * 32, "checkpoint": "base.ckpt"}
            ),
            "unknown volume",
        ),
        (napari.post_arrays("inference", {"mask": mask}, {"checkpoint": "base.ckpt"}), "'img'"),
        (napari.training(img, mask, pretrained_checkpoint="nope.ckpt"), "nope.ckpt"),
        (napari.training(img, mask, max_epochs=0), "max_epochs"),
    ]
    for response, reason in cases:
        assert reason in _failed(napari, response)
    # Nothing but the failed session rows: no volume stored, no task queued, no files.
    assert LabelpropVolume.objects.count() == 0 and Task.objects.count() == 0
    assert LabelpropSession.objects.filter(state="failed").count() == len(cases)


def test_a_task_that_fails_fails_its_session(napari, stored_checkpoint):
    img, _labels, mask = small_volume()
    token = _text(napari.inference(img, mask, checkpoint="base.ckpt"))
    LabelpropCheckpoint.objects.all().delete()  # gone before the worker gets to it
    task = run_session_task(token)
    assert task.state == "failed"
    assert "checkpoint was deleted" in _failed_download(napari, token)


def _failed_download(napari, token: str) -> str:
    assert napari.session_exists(token)
    response = napari.download(token)
    assert response.status_code == 409
    return _text(response)


def test_unknown_tokens(napari):
    for query in ("?token=" + str(uuid.uuid4()), "?token=not-a-uuid", ""):
        for route in ("download_inference", "get_session_info"):
            response = napari.get(route, query)
            assert response.status_code == 404 and _text(response) == "Unknown token."


def test_methods_outside_the_protocol(napari):
    response = napari.client.post("/check", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 405 and _text(response)
    assert napari.client.get("/inference").status_code == 405


def test_cuda_sessions_go_to_a_gpu_host_queue(napari, world, stored_checkpoint):
    from apps.clusters.models import Host
    from apps.tasks.models import Task

    img, _, mask = small_volume()
    token = _text(napari.inference(img, mask, z_axis=0, checkpoint="base.ckpt"))
    assert Task.objects.get(params__session_id=token).queue == "cpu"  # no GPU host here
    Host.objects.create(pk="gpu-0", kind="gpu", name="GPU", state="available")
    token = _text(napari.inference(img, mask, z_axis=0, checkpoint="base.ckpt"))
    assert Task.objects.get(params__session_id=token).queue == "gpu-0"
