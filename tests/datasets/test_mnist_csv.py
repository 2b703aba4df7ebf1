"""MNIST and CSV imports through the API, the arrays they store, and every bad input."""

import gzip

import numpy as np
import pytest

from apps.datasets.models import Dataset
from apps.datasets.selectors import dataset_arrays
from tests.conftest import client_for
from tests.datasets.conftest import idx_bytes, mnist_arrays, upload


def _url(world, kind=""):
    base = f"/api/projects/{world.project.pk}/datasets"
    return f"{base}/{kind}" if kind else base


def _post_mnist(client, world, images: bytes, labels: bytes, name="mnist"):
    return client.post(
        _url(world, "mnist"),
        {"name": name, "images": upload("imgs.idx", images), "labels": upload("lbl.idx", labels)},
        format="multipart",
    )


def _media_files(settings):
    root = settings.MEDIA_ROOT / "projects"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_import_raw_and_gzip(world, gz):
    images, labels = mnist_arrays(n=20, rows=4, cols=3)
    r = _post_mnist(
        client_for(world.member), world, idx_bytes(images, gz=gz), idx_bytes(labels, gz=gz)
    )
    assert r.status_code == 201, r.json()
    data = r.json()["data"]
    assert data["kind"] == "mnist" and data["status"] == "ready"
    assert data["num_samples"] == 20 and data["input_shape"] == [12]
    assert data["num_classes"] == 10 and data["label_shape"] == []
    assert data["metadata"]["rows"] == 4 and data["metadata"]["cols"] == 3
    dataset = Dataset.objects.get(pk=data["id"])
    # Stored as the upload's uint8 pixels, a quarter of float32's bytes...
    stored = np.load(dataset.storage_dir / "inputs.npy", mmap_mode="r")
    assert stored.dtype == np.uint8 and stored.shape == (20, 12)
    np.testing.assert_array_equal(stored, images.reshape(20, 12))
    assert dataset.size_bytes == stored.nbytes + 128 + (20 * 8 + 128)
    # ... and read as float32 in 0..1, whole or by rows.
    x, y = dataset_arrays(dataset)
    assert x.dtype == np.float32 and x.shape == (20, 12) and len(x) == 20
    np.testing.assert_allclose(np.asarray(x), images.reshape(20, 12) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(x[[3, 1]], images.reshape(20, 12)[[3, 1]] / 255.0, rtol=1e-6)
    assert x[2:4].dtype == np.float32 and x.max() == np.float32(images.max() / 255.0)
    assert y.dtype == np.int64 and y.tolist() == labels.tolist()
    x2, _ = dataset_arrays(dataset, mmap=False)
    assert not isinstance(x2, np.memmap) and x2.dtype == np.float32
    np.testing.assert_array_equal(x2, np.asarray(x))


@pytest.mark.parametrize("dtype", [">i2", ">i4", ">f4", ">f8"])
def test_mnist_wider_dtypes_are_stored_natively_and_read_unscaled(world, dtype):
    rng = np.random.default_rng(1)
    images = rng.integers(-300, 300, size=(6, 2, 3)).astype(dtype)
    labels = np.arange(6, dtype=np.uint8)
    r = _post_mnist(client_for(world.owner), world, idx_bytes(images), idx_bytes(labels))
    assert r.status_code == 201, r.json()
    dataset = Dataset.objects.get(pk=r.json()["data"]["id"])
    stored = np.load(dataset.storage_dir / "inputs.npy", mmap_mode="r")
    assert stored.dtype == np.dtype(dtype).newbyteorder("=")
    x, _ = dataset_arrays(dataset)
    np.testing.assert_array_equal(np.asarray(x), images.reshape(6, 6).astype(np.float32))
    assert x.dtype == np.float32 and x.min() == images.min()


def _bad_cases():
    images, labels = mnist_arrays(n=10)
    good_i, good_l = idx_bytes(images), idx_bytes(labels)
    return {
        "bad magic images": (b"\x12\x34" + good_i[2:], good_l, "images", "magic"),
        "labels given as images": (good_i, good_i, "labels", "dimensions"),
        "images given as labels": (good_l, good_l, "images", "dimensions"),
        "truncated images": (good_i[:-5], good_l, "images", "truncated"),
        "trailing bytes": (good_i + b"xx", good_l, "images", "more than"),
        "truncated header": (good_i[:6], good_l, "images", "truncated"),
        "count mismatch": (good_i, idx_bytes(labels[:7]), "labels", "7 labels for 10 images"),
        "empty file": (b"", good_l, "images", "empty"),
        "tiny file": (b"\x00\x00", good_l, "images", "magic"),
        "corrupt gzip": (b"\x1f\x8b\x08\x00garbage", good_l, "images", "gzip"),
        "truncated labels": (good_i, good_l[:-1], "labels", "truncated"),
        "trailing label bytes": (good_i, good_l + b"x", "labels", "more than"),
        "labels not integers": (good_i, idx_bytes(labels.astype(">f4")), "labels", "integers"),
        "truncated gzip": (gzip.compress(good_i)[:-12], good_l, "images", "gzip"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_mnist_errors_leave_nothing_behind(world, settings, case):
    images, labels, field, text = _bad_cases()[case]
    r = _post_mnist(client_for(world.owner), world, images, labels)
    assert r.status_code == 422, r.json()
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in error["details"] and text in error["message"], error
    assert not Dataset.objects.exists()
    assert _media_files(settings) == []


@pytest.mark.parametrize("which", ["images", "labels"])
def test_mnist_huge_header_is_refused_before_any_data(world, settings, which):
    images, labels = mnist_arrays(n=10)
    huge = {
        "images": b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3 + idx_bytes(images)[16:],
        "labels": b"\x00\x00\x08\x01" + b"\xff\xff\xff\xff" + idx_bytes(labels)[8:],
    }
    files = {"images": idx_bytes(images), "labels": idx_bytes(labels), which: huge[which]}
    r = _post_mnist(client_for(world.owner), world, files["images"], files["labels"])
    assert r.status_code == 413, r.json()
    error = r.json()["error"]
    assert "DATASET_IDX_MAX_BYTES" in error["message"] and which in error["message"]
    assert not Dataset.objects.exists()
    assert _media_files(settings) == []


def test_mnist_labels_above_nine_and_int_labels(world):
    images, _ = mnist_arrays(n=5)
    labels = np.array([0, 3, 12, 255, 1], dtype=np.int32)
    r = _post_mnist(client_for(world.owner), world, idx_bytes(images), idx_bytes(labels))
    assert r.status_code == 201
    assert r.json()["data"]["num_classes"] == 256
    bad = np.array([0, 3, 12, 256, 1], dtype=np.int32)
    r = _post_mnist(client_for(world.owner), world, idx_bytes(images), idx_bytes(bad), name="b")
    assert r.status_code == 422 and "0..255" in r.json()["error"]["message"]


def test_duplicate_name_conflicts_and_viewer_cannot_import(world):
    images, labels = mnist_arrays(n=3)
    client = client_for(world.owner)
    assert _post_mnist(client, world, idx_bytes(images), idx_bytes(labels)).status_code == 201
    r = _post_mnist(client, world, idx_bytes(images), idx_bytes(labels))
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"
    r = _post_mnist(client_for(world.viewer), world, idx_bytes(images), idx_bytes(labels), "v")
    assert r.status_code == 403
    assert Dataset.objects.count() == 1


def test_missing_fields_and_unknown_fields(world):
    client = client_for(world.owner)
    r = client.post(_url(world, "mnist"), {"name": "x"}, format="multipart")
    assert r.status_code == 422 and "images" in r.json()["error"]["details"]
    images, labels = mnist_arrays(n=3)
    r = client.post(
        _url(world, "mnist"),
        {
            "name": "x",
            "images": upload("i", idx_bytes(images)),
            "labels": upload("l", idx_bytes(labels)),
            "project": world.other_project.pk,
        },
        format="multipart",
    )
    assert r.status_code == 422 and "project" in r.json()["error"]["details"]


CSV = b"a,b,label\n1,2,cat\n3,4.5,dog\n\n5,6,cat\n"


def _post_csv(client, world, data: bytes, name="table", **extra):
    body = {"name": name, "file": upload("t.csv", data, "text/csv"), **extra}
    return client.post(_url(world, "csv"), body, format="multipart")


def test_csv_import_with_string_labels(world):
    r = _post_csv(client_for(world.owner), world, CSV, label_column="label")
    assert r.status_code == 201, r.json()
    data = r.json()["data"]
    assert data["num_samples"] == 3 and data["input_shape"] == [2]
    assert data["class_names"] == ["cat", "dog"] and data["num_classes"] == 2
    x, y = dataset_arrays(Dataset.objects.get(pk=data["id"]))
    np.testing.assert_allclose(x, [[1, 2], [3, 4.5], [5, 6]])
    assert y.tolist() == [0, 1, 0]


def test_csv_import_integer_labels_columns_and_no_labels(world):
    client = client_for(world.owner)
    data = b"x,y,z,cls\n1,2,3,2\n4,5,6,0\n"
    r = _post_csv(client, world, data, label_column="cls", input_columns="z,x")
    assert r.status_code == 201, r.json()
    ds = Dataset.objects.get(pk=r.json()["data"]["id"])
    x, y = dataset_arrays(ds)
    assert x.tolist() == [[3, 1], [6, 4]] and y.tolist() == [2, 0] and ds.num_classes == 3
    r = _post_csv(client, world, b"p,q\n1,2\n3,4\n", name="nolabels")
    assert r.status_code == 201
    x, y = dataset_arrays(Dataset.objects.get(pk=r.json()["data"]["id"]))
    assert x.shape == (2, 2) and y is None


@pytest.mark.parametrize(
    "labels,names,codes",
    [
        (["b", "a", "10", "b", "-1", "a", "c"], ["-1", "10", "a", "b", "c"], [3, 2, 1, 3, 0, 2, 4]),
        (["3", "0", "3", "1", "07", "2", "0"], [str(i) for i in range(8)], [3, 0, 3, 1, 7, 2, 0]),
    ],
)
def test_csv_rows_stream_to_disk_in_chunks(world, monkeypatch, labels, names, codes):
    """Rows go to disk chunk by chunk (3 rows here) and labels as codes: the stored arrays are
    those of the whole table, class names sorted (or integer labels kept as class indices)."""
    from apps.datasets import imports as dataset_imports

    monkeypatch.setattr(dataset_imports, "_ROWS_PER_CHUNK", 3)
    rows = [[i, i * 0.5, -i] for i in range(len(labels))]
    data = "p,q,r,label\n" + "".join(
        f"{a},{b},{c},{label}\n" for (a, b, c), label in zip(rows, labels, strict=True)
    )
    r = _post_csv(client_for(world.owner), world, data.encode(), label_column="label")
    assert r.status_code == 201, r.json()
    dataset = Dataset.objects.get(pk=r.json()["data"]["id"])
    assert dataset.class_names == names and dataset.num_samples == len(labels)
    x, y = dataset_arrays(dataset)
    assert x.dtype == np.float32 and x.tolist() == rows
    assert y.dtype == np.int64 and y.tolist() == codes
    assert sorted(p.name for p in dataset.storage_dir.iterdir()) == ["inputs.npy", "labels.npy"]


@pytest.mark.parametrize(
    "data,extra,text",
    [
        (b"a,b,label\n1,2,cat\n3,cat\n", {"label_column": "label"}, "line 3: expected 3 fields"),
        (b"a,b,label\n1,2,cat\n3,x1,dog\n", {"label_column": "label"}, "line 3, column 'b'"),
        (b"a,b,label\n1,nan,cat\n", {"label_column": "label"}, "line 2, column 'b'"),
        (b"a,b,label\n1,2,\n", {"label_column": "label"}, "empty label"),
        (b"", {}, "empty"),
        (b"a,b\n", {}, "no data rows"),
        (b"a,a\n1,2\n", {}, "duplicate"),
        (b"a,b\n1,2\n", {"label_column": "nope"}, "no column named 'nope'"),
        (b"a,b\n1,2\n", {"input_columns": "a,zz"}, "zz"),
        (b"a,b\n\xff\xfe,2\n", {}, "UTF-8"),
    ],
)
def test_csv_errors_name_the_line(world, settings, data, extra, text):
    r = _post_csv(client_for(world.owner), world, data, **extra)
    assert r.status_code == 422, r.json()
    assert text in r.json()["error"]["message"], r.json()
    assert not Dataset.objects.exists() and _media_files(settings) == []


def test_dataset_list_get_delete(world, django_assert_num_queries, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = client_for(world.owner)
    for i in range(12):
        images, labels = mnist_arrays(n=2, seed=i)
        assert (
            _post_mnist(client, world, idx_bytes(images), idx_bytes(labels), name=f"d{i}")
        ).status_code == 201
    _post_csv(client, world, CSV, name="t", label_column="label")
    counts = []
    for size in (10, 100):
        with CaptureQueriesContext(connection) as ctx:
            r = client.get(_url(world), {"page_size": size})
        assert r.status_code == 200
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]
    page = r.json()["data"]
    assert page["total"] == 13 and len(page["items"]) == 13 and page["pages"] == 1
    r = client.get(_url(world), {"kind": "csv"})
    assert [d["name"] for d in r.json()["data"]["items"]] == ["t"]
    assert client.get(_url(world), {"kind": "zzz"}).status_code == 422

    ds = Dataset.objects.get(name="d0")
    assert client.get(f"{_url(world)}/{ds.pk}").json()["data"]["name"] == "d0"
    assert client.get(f"{_url(world)}/not-a-uuid").status_code == 404
    assert client_for(world.viewer).delete(f"{_url(world)}/{ds.pk}").status_code == 403
    directory = ds.storage_dir
    assert (directory / "inputs.npy").exists()
    assert client.delete(f"{_url(world)}/{ds.pk}").status_code == 204
    assert not directory.exists() and not Dataset.objects.filter(pk=ds.pk).exists()
    assert client.get(f"{_url(world)}/{ds.pk}").status_code == 404
