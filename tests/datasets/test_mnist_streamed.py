"""The multipart MNIST upload is parsed as it arrives (issue #22): an upload handler feeds each
chunk into an incremental gunzip + idx parser writing the stored arrays, so the files never become
Django temporary files; bad or too large data mid-stream leaves nothing behind."""

import gzip

import numpy as np
import pytest
from django.core.files import uploadhandler

from apps.core.exceptions import ValidationFailed
from apps.datasets import idx
from apps.datasets.models import Dataset
from apps.datasets.selectors import dataset_arrays
from tests.conftest import client_for
from tests.datasets.conftest import idx_bytes, mnist_arrays, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def temporary_uploads(settings, monkeypatch):
    """Every upload above 0 bytes would go to a Django temporary file: the ones made are listed."""
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    made = []
    real = uploadhandler.TemporaryUploadedFile

    def recording(*args, **kwargs):
        made.append(args or kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(uploadhandler, "TemporaryUploadedFile", recording)
    return made


def _files(settings):
    root = settings.MEDIA_ROOT / "projects"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _post(world, fields: dict):
    url = f"/api/projects/{world.project.pk}/datasets/mnist"
    return client_for(world.owner).post(url, fields, format="multipart")


def _big_pair(n=3000):
    """Big enough for many chunks of Django's multipart parser (64 KiB)."""
    return mnist_arrays(n=n, rows=28, cols=28)


@pytest.mark.parametrize("labels_first", [False, True])
@pytest.mark.parametrize("gz", [False, True])
def test_the_upload_never_becomes_a_temporary_file(world, temporary_uploads, labels_first, gz):
    images, labels = _big_pair()
    files = {
        "images": upload("i.idx", idx_bytes(images, gz=gz)),
        "labels": upload("l.idx", idx_bytes(labels, gz=gz)),
    }
    order = ["labels", "images"] if labels_first else ["images", "labels"]
    r = _post(world, {"name": "m", **{k: files[k] for k in order}})
    assert r.status_code == 201, r.content
    assert temporary_uploads == []
    dataset = Dataset.objects.get()
    stored = np.load(dataset.storage_dir / "inputs.npy", mmap_mode="r")
    np.testing.assert_array_equal(stored, images.reshape(len(images), -1))
    _, y = dataset_arrays(dataset)
    assert y.dtype == np.int64 and y.tolist() == labels.tolist()
    # only the two arrays were published (the labels as they came were removed)
    assert sorted(p.name for p in dataset.storage_dir.iterdir()) == ["inputs.npy", "labels.npy"]
    assert dataset.size_bytes == stored.nbytes + 128 + (len(labels) * 8 + 128)


@pytest.mark.parametrize("labels_first", [False, True])
def test_corrupt_in_the_middle_of_the_stream_leaves_nothing(
    world, settings, temporary_uploads, labels_first
):
    images, labels = _big_pair()
    data = bytearray(gzip.compress(idx_bytes(images), compresslevel=1))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # the first half decodes and is written
    files = {"images": upload("i.gz", bytes(data)), "labels": upload("l", idx_bytes(labels))}
    order = ["labels", "images"] if labels_first else ["images", "labels"]
    r = _post(world, {"name": "m", **{k: files[k] for k in order}})
    assert r.status_code == 422, r.content
    error = r.json()["error"]
    assert "gzip" in error["message"] and "images" in error["details"]
    assert temporary_uploads == []
    assert not Dataset.objects.exists()
    assert _files(settings) == []


@pytest.mark.parametrize("which", ["images", "labels"])
def test_a_file_over_the_limit_is_refused_with_todays_answer(
    world, settings, temporary_uploads, which
):
    images, labels = _big_pair()
    if which == "labels":  # labels of 4 bytes each over the limit, images of 1 pixel under it
        images, labels = images[:, :1, :1], labels.astype(">i4")
    data = {"images": idx_bytes(images), "labels": idx_bytes(labels)}
    settings.DATASET_IDX_MAX_BYTES = len(data[which]) - 1
    files = {"labels": upload("l", data["labels"]), "images": upload("i", data["images"])}
    r = _post(world, {"name": "m", **files})
    assert r.status_code == 413, r.content
    error = r.json()["error"]
    assert "DATASET_IDX_MAX_BYTES" in error["message"] and which in error["message"]
    assert temporary_uploads == []
    assert not Dataset.objects.exists()
    assert _files(settings) == []


def test_counts_are_checked_whichever_file_comes_first(world, settings, temporary_uploads):
    images, labels = mnist_arrays(n=10)
    r = _post(
        world,
        {
            "name": "m",
            "labels": upload("l", idx_bytes(labels[:7])),
            "images": upload("i", idx_bytes(images)),
        },
    )
    assert r.status_code == 422, r.content
    assert "7 labels for 10 images" in r.json()["error"]["message"]
    assert temporary_uploads == []
    assert _files(settings) == []


def _feed(data: bytes, step: int, ndim=(3,)) -> np.ndarray:
    feed = idx.IdxFeed(
        field="images",
        expect_ndim=ndim,
        max_bytes=1 << 30,
        setting_name="X",
        allocate=lambda h: np.empty(h.count, dtype=h.dtype.newbyteorder("=")),
    )
    for start in range(0, len(data), step):
        feed.feed(data[start : start + step])
    return feed.close()


@pytest.mark.parametrize("step", [1, 5, 17, 1 << 20])
@pytest.mark.parametrize(
    "encode",
    [
        lambda raw: raw,
        gzip.compress,
        lambda raw: gzip.compress(raw[:30]) + gzip.compress(raw[30:]),  # two members
        lambda raw: gzip.compress(raw) + bytes(9),  # zero padding after the member
    ],
    ids=["raw", "gzip", "members", "padding"],
)
def test_the_feed_reads_what_stream_idx_reads_in_any_chunking(step, encode):
    array = np.arange(4 * 5 * 3, dtype=">i2").reshape(4, 5, 3)
    data = encode(idx.idx_bytes(array))
    got = _feed(data, step)
    expected = idx.stream_idx(
        data,
        field="images",
        expect_ndim=(3,),
        max_bytes=1 << 30,
        setting_name="X",
        allocate=lambda h: np.empty(h.count, dtype=h.dtype.newbyteorder("=")),
    )
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert np.array_equal(got.reshape(4, 5, 3), array.astype("=i2"))


@pytest.mark.parametrize(
    "data,text",
    [
        (gzip.compress(idx.idx_bytes(np.zeros((2, 2, 2), np.uint8))) + b"junk", "gzip"),
        (gzip.compress(idx.idx_bytes(np.zeros((2, 2, 2), np.uint8)))[:-3], "gzip"),
        (idx.idx_bytes(np.zeros((2, 2, 2), np.uint8)) + b"x", "more than"),
        (idx.idx_bytes(np.zeros((2, 2, 2), np.uint8))[:-1], "truncated"),
        (idx.idx_bytes(np.zeros((2, 2, 2), np.uint8))[:9], "truncated header"),
        (b"\x00\x00\x08", "magic"),
    ],
)
def test_the_feed_refuses_what_stream_idx_refuses(data, text):
    with pytest.raises(ValidationFailed) as caught:
        _feed(data, 3)
    assert text in caught.value.message
