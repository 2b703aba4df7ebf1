"""A `from-uploads` call whose server died half-way can be retried with the same uploads: the
abandoned dataset (left "uploading", its uploads bound to it) is discarded, not a 409 for ever."""

import threading

import numpy as np
import pytest

from apps.datasets import uploads as dataset_uploads
from apps.datasets.idx import idx_bytes
from apps.datasets.models import Dataset, UploadSession
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def _uploads(client, project):
    base = f"/api/projects/{project.pk}/uploads"
    rng = np.random.default_rng(0)
    files = {
        "images": idx_bytes(rng.integers(0, 256, size=(20, 8, 8), dtype=np.uint8)),
        "labels": idx_bytes(rng.integers(0, 10, size=20, dtype=np.uint8)),
    }
    ids = {}
    for role, data in files.items():
        upload = client.post(base, {"filename": role, "size": len(data)}, format="json")
        ids[role] = upload.json()["data"]["id"]
        r = client.generic(
            "PUT", f"{base}/{ids[role]}?position=0", data, "application/octet-stream"
        )
        assert r.status_code == 200, r.content
    return ids


def _from_uploads(client, project, ids, name="digits"):
    return client.post(
        f"/api/projects/{project.pk}/datasets/from-uploads",
        {"name": name, "kind": "mnist", "uploads": ids},
        format="json",
    )


def _died_half_way(world, ids, name="digits"):
    """What a killed server leaves: the pending dataset, its uploads bound to it."""
    return dataset_uploads.dataset_create_pending(
        project=world.project,
        actor=world.member,
        name=name,
        kind="mnist",
        uploads={role: UploadSession.objects.get(pk=pk) for role, pk in ids.items()},
        origin=dataset_uploads.FROM_UPLOADS,
    )


def test_a_retry_after_the_server_died_finishes_without_re_uploading(world):
    client = client_for(world.member)
    ids = _uploads(client, world.project)
    abandoned = _died_half_way(world, ids)
    r = _from_uploads(client, world.project, ids)
    assert r.status_code == 201, r.content
    assert r.json()["data"]["status"] == "ready" and r.json()["data"]["num_samples"] == 20
    assert not Dataset.objects.filter(pk=abandoned.pk).exists()


def test_a_call_still_in_progress_is_not_taken_over(world):
    client = client_for(world.member)
    ids = _uploads(client, world.project)
    pending = _died_half_way(world, ids)
    held, release = threading.Event(), threading.Event()

    def in_progress():  # another request (thread, connection) still finalizing it
        from django.db import connection

        with dataset_uploads._finalize_lock(pending):
            held.set()
            release.wait(30)
        connection.close()

    thread = threading.Thread(target=in_progress)
    thread.start()
    try:
        assert held.wait(30)
        r = _from_uploads(client, world.project, ids)
        assert r.status_code == 409 and "still being created" in r.json()["error"]["message"]
        assert Dataset.objects.filter(pk=pending.pk).exists()
    finally:
        release.set()
        thread.join(30)


def test_a_ready_dataset_keeps_its_name_and_uploads(world):
    client = client_for(world.member)
    ids = _uploads(client, world.project)
    assert _from_uploads(client, world.project, ids).status_code == 201
    again = _from_uploads(client, world.project, _uploads(client, world.project))
    assert again.status_code == 409  # the name is taken by a finished dataset
