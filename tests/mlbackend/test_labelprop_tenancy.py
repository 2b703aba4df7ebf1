"""Cross-tenant checks of the labelprop surface. Its routes take tokens, hashes and checkpoint
names in query strings and bodies, not URL kwargs, so tests/test_tenancy.py cannot fill them:
here the surface is bound to project A and every route is tried with project B's volume hash,
checkpoint name and session token. Nothing of B is listed, found, used or changed; rebinding
the surface to B shows them, so the scope really is the bound project."""

from __future__ import annotations

import pytest

from apps.core.tenancy import Role
from apps.mlbackend.models import LabelpropCheckpoint, LabelpropSession, LabelpropVolume
from tests.mlbackend.labelprop_helpers import (
    Napari,
    checkpoint_bytes,
    enable,
    md5,
    run_session_task,
    small_volume,
)
from tests.test_tenancy import _snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_heartbeat_thread(settings):
    settings.TASK_HEARTBEAT_INTERVAL_S = 3600


@pytest.fixture
def victim(world, settings):
    """Project B's volume, checkpoint and finished session, made through the surface itself
    while it was bound to B."""
    enable(settings, world.other_project, role=Role.ADMIN, username="svc-b")
    napari = Napari()
    img, _labels, mask = small_volume(seed=5)
    assert napari.send_ckpt("secret.ckpt", checkpoint_bytes()).content == b"ok"
    token = napari.inference(img, mask, checkpoint="secret.ckpt").content.decode()
    assert run_session_task(token).state == "finished"
    return {"img": img, "mask": mask, "hash": md5(img), "token": token}


def test_project_b_objects_are_unreachable_when_bound_to_a(world, settings, victim):
    enable(settings, world.project, username="svc-a")
    napari = Napari()
    before = _snapshot()
    b_rows = (
        set(LabelpropSession.objects.values_list("pk", "state", "updated_at")),
        set(LabelpropVolume.objects.values_list("pk", "updated_at")),
        set(LabelpropCheckpoint.objects.values_list("pk", "updated_at")),
    )

    assert napari.get("list_hash").content == b""
    assert napari.get("list_ckpts").content == b""
    assert victim["token"] not in napari.get("get_session_list").content.decode()
    for route in ("download_inference", "get_session_info"):
        response = napari.get(route, "?token=" + victim["token"])
        assert response.status_code == 404 and response.content == b"Unknown token."
    assert napari.get("get_ckpt_dir").content == b"default"
    assert _snapshot() == before

    # Using B's hash or checkpoint name from A: A's session fails, B's rows are untouched.
    by_hash = napari.post_arrays(
        "inference", {"mask": victim["mask"]}, {"hash": victim["hash"], "checkpoint": "x"}
    ).content.decode()
    assert "unknown volume" in napari.download(by_hash).content.decode()
    by_name = napari.inference(victim["img"], victim["mask"], checkpoint="secret.ckpt")
    assert "no checkpoint named" in napari.download(by_name.content.decode()).content.decode()
    pretrained = napari.training(victim["img"], victim["mask"], pretrained_checkpoint="secret.ckpt")
    assert "no checkpoint named" in napari.download(pretrained.content.decode()).content.decode()
    # A's failed requests stored nothing, and B's stored copy of the same image was not used.
    a_sessions = LabelpropSession.objects.filter(project=world.project)
    assert all(s.state == "failed" for s in a_sessions)
    assert not LabelpropVolume.objects.filter(project=world.project).exists()
    assert b_rows[0] <= set(LabelpropSession.objects.values_list("pk", "state", "updated_at"))
    assert b_rows[1] == set(LabelpropVolume.objects.values_list("pk", "updated_at"))
    assert b_rows[2] == set(LabelpropCheckpoint.objects.values_list("pk", "updated_at"))


def test_rebinding_to_b_shows_b(world, settings, victim):
    enable(settings, world.other_project, role=Role.ADMIN, username="svc-b")
    napari = Napari()
    assert napari.get("list_hash").content.decode() == victim["hash"]
    assert napari.list_ckpts() == ["secret.ckpt"]
    assert napari.download(victim["token"]).status_code == 200


def test_files_stay_under_the_bound_projects_prefix(world, settings, victim, _media_root):
    b_files = sorted(p.relative_to(_media_root) for p in _media_root.rglob("*") if p.is_file())
    assert b_files and all(
        str(p).startswith(f"projects/{world.other_project.pk}/") for p in b_files
    )
