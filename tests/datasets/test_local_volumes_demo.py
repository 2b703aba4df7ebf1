"""Server-folder import, 3D volumes and the demo datasets."""

import io
import os

import numpy as np
import pytest

from apps.datasets.demo import create_demo_datasets
from apps.datasets.models import Dataset
from apps.datasets.selectors import dataset_arrays
from tests.conftest import client_for
from tests.datasets.conftest import png_bytes, upload


def _local(client, world, path):
    return client.post(
        f"/api/datasets/{world.project.pk}/import/local", {"path": str(path)}, format="json"
    )


def test_local_import_is_off_by_default(world, tmp_path):
    r = _local(client_for(world.owner), world, tmp_path)
    assert r.status_code == 403 and "DATASET_IMPORT_ROOTS" in r.json()["error"]["message"]


@pytest.fixture
def roots(tmp_path, settings):
    root = tmp_path / "allowed"
    for cls in ("a", "b"):
        (root / "set" / cls).mkdir(parents=True)
        for i in range(2):
            (root / "set" / cls / f"{i}.png").write_bytes(png_bytes())
    outside = tmp_path / "outside"
    (outside / "c").mkdir(parents=True)
    (outside / "c" / "x.png").write_bytes(png_bytes())
    settings.DATASET_IMPORT_ROOTS = [str(root)]
    return root, outside


def test_local_import_inside_a_root(world, roots):
    root, _ = roots
    r = _local(client_for(world.owner), world, root / "set")
    assert r.status_code == 200, r.json()
    assert r.json()["data"]["num_images"] == 4 and r.json()["data"]["num_classes"] == 2


def test_local_import_refuses_escapes(world, roots):
    root, outside = roots
    client = client_for(world.owner)
    os.symlink(outside, root / "escape")
    assert _local(client, world, root / "escape").status_code == 403
    assert _local(client, world, outside).status_code == 403
    assert _local(client, world, f"{root}/set/../../outside").status_code == 403
    assert _local(client, world, "relative/path").status_code == 422
    os.symlink(outside / "c" / "x.png", root / "set" / "a" / "link.png")
    r = _local(client, world, root / "set")
    assert r.status_code == 422 and "symbolic link" in r.json()["error"]["message"]
    assert not Dataset.objects.exists()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy(array, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kw)
    return buf.getvalue()


def _post_volume(client, world, file: bytes, labels: bytes | None = None, name="vol"):
    body = {"name": name, "file": upload("v.npz", file)}
    if labels is not None:
        body["labels"] = upload("l.npy", labels)
    return client.post(
        f"/api/projects/{world.project.pk}/datasets/volume", body, format="multipart"
    )


def test_volume_npz_with_labels(world):
    rng = np.random.default_rng(0)
    image = rng.random((4, 5, 6)).astype(np.float64)
    label = rng.integers(0, 3, size=(4, 5, 6))
    r = _post_volume(client_for(world.owner), world, _npz(image=image, label=label))
    assert r.status_code == 201, r.json()
    data = r.json()["data"]
    assert data["input_shape"] == [4, 5, 6] and data["num_samples"] == 1
    assert data["label_shape"] == [4, 5, 6] and data["num_classes"] == int(label.max()) + 1
    x, y = dataset_arrays(Dataset.objects.get(pk=data["id"]))
    assert x.dtype == np.float32 and x.shape == (1, 4, 5, 6)
    np.testing.assert_allclose(x[0], image, rtol=1e-6)
    assert y.dtype == np.int64 and (y[0] == label).all()


def test_volume_npy_and_separate_labels(world):
    client = client_for(world.owner)
    image = np.zeros((2, 3, 4, 5), dtype=np.uint8)
    r = _post_volume(client, world, _npy(image), _npy(np.ones((2, 3, 4, 5), dtype=np.int16)))
    assert r.status_code == 201, r.json()
    assert r.json()["data"]["num_samples"] == 2


@pytest.mark.parametrize(
    "file,labels,text",
    [
        (_npz(image=np.zeros((4, 5, 6)), label=np.zeros((4, 5, 7))), None, "does not match"),
        (_npz(other=np.zeros((4, 5, 6))), None, "'image' or 'volume'"),
        (_npy(np.zeros((4, 5))), None, "3D volume"),
        (_npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), None, "unreadable"),
        (b"garbage", None, "expected a .npy"),
        (_npy(np.zeros((2, 2, 2))), _npy(np.full((2, 2, 2), 0.5)), "whole numbers"),
    ],
)
def test_volume_errors(world, settings, file, labels, text):
    r = _post_volume(client_for(world.owner), world, file, labels)
    assert r.status_code == 422 and text in r.json()["error"]["message"], r.json()
    assert not Dataset.objects.exists()


def test_demo_datasets(world):
    out = io.StringIO()
    create_demo_datasets(project=world.project, actor=world.owner, stdout=out)
    create_demo_datasets(project=world.project, actor=world.owner)
    train = Dataset.objects.get(project=world.project, name="digits-train")
    test = Dataset.objects.get(project=world.project, name="digits-test")
    assert Dataset.objects.count() == 2 and "digits-train" in out.getvalue()
    assert (train.num_samples, test.num_samples) == (1437, 360)
    assert train.input_shape == [64] and train.num_classes == 10
    assert train.metadata["rows"] == 8
    x, y = dataset_arrays(test)
    assert x.shape == (360, 64) and float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert np.bincount(y).min() >= 35  # stratified: every digit is in the test set
