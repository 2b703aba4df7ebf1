"""A full data disk answers 507 with nothing half-written (it crashed the server or answered a
generic 500 before)."""

import errno
import io

import pytest

from apps.datasets import storage as dataset_storage
from apps.datasets import uploads as dataset_uploads
from apps.datasets.models import Dataset
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


class _FullDiskFile(io.FileIO):
    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def _full_disk(monkeypatch):
    real_open = open

    def opener(path, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wa+"):
            return _FullDiskFile(path, mode.replace("b", "").replace("t", "") or "r")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(dataset_uploads, "open", opener, raising=False)


def test_an_upload_chunk_on_a_full_disk_is_507_and_stores_nothing(world, monkeypatch):
    client = client_for(world.member)
    base = f"/api/projects/{world.project.pk}/uploads"
    upload = client.post(base, {"filename": "a.bin", "size": 8}, format="json").json()["data"]
    _full_disk(monkeypatch)
    r = client.generic(
        "PUT", f"{base}/{upload['id']}?position=0", b"12345678", "application/octet-stream"
    )
    assert r.status_code == 507, r.content
    body = r.json()
    assert body["status"] == "error" and body["error"]["code"] == "INSUFFICIENT_STORAGE"
    monkeypatch.undo()
    progress = client.get(f"{base}/{upload['id']}").json()["data"]
    assert progress["received_bytes"] == 0 and progress["complete"] is False


def test_a_csv_import_on_a_full_disk_is_507_and_leaves_nothing(world, monkeypatch, tmp_path):
    import numpy as np

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    client = client_for(world.member)
    monkeypatch.setattr(np, "save", no_space)
    monkeypatch.setattr(np.lib.format, "open_memmap", no_space)
    csv = io.BytesIO(b"a,b,label\n1,2,0\n3,4,1\n")
    csv.name = "t.csv"
    r = client.post(
        f"/api/projects/{world.project.pk}/datasets/csv",
        {"file": csv, "name": "t", "label_column": "label"},
        format="multipart",
    )
    assert r.status_code == 507, r.content
    assert not Dataset.objects.filter(project=world.project).exists()
    leftovers = [p for p in (tmp_path / "media").rglob("*") if p.is_file()]
    assert leftovers == []  # no staging files left behind


@pytest.mark.parametrize("gz", [False, True])
def test_an_mnist_import_on_a_full_disk_is_507_and_leaves_nothing(world, monkeypatch, gz):
    """The images are decoded straight into the stored file: a disk that cannot hold it is 507,
    also when gzip decoding is under way (its OSError handling once called it corrupt data)."""
    from apps.core import safeio
    from tests.datasets.conftest import idx_bytes, mnist_arrays, upload

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safeio.os, "posix_fallocate", no_space)
    images, labels = mnist_arrays(n=10)
    r = client_for(world.member).post(
        f"/api/projects/{world.project.pk}/datasets/mnist",
        {
            "name": "m",
            "images": upload("i.idx", idx_bytes(images, gz=gz)),
            "labels": upload("l.idx", idx_bytes(labels, gz=gz)),
        },
        format="multipart",
    )
    assert r.status_code == 507, r.content
    assert r.json()["error"]["code"] == "INSUFFICIENT_STORAGE"
    assert not Dataset.objects.filter(project=world.project).exists()
    root = dataset_storage.datasets_root(world.project.pk)
    assert [p for p in root.rglob("*") if p.is_file()] == []
