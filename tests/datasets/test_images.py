"""The studio's image dataset: ZIP import, listing, files, thumbnails, info, and ZIP attacks."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from apps.datasets.models import Dataset, DatasetItem
from apps.datasets.selectors import dataset_arrays
from tests.conftest import client_for
from tests.datasets.conftest import class_zip, png_bytes, upload, zip_bytes


def _base(world):
    return f"/api/datasets/{world.project.pk}"


def _import(client, world, data: bytes):
    return client.post(
        f"{_base(world)}/import/upload",
        {"file": upload("d.zip", data, "application/zip")},
        format="multipart",
    )


@pytest.fixture
def imported(world):
    client = client_for(world.owner)
    r = _import(client, world, class_zip({"cat": 5, "dog": 3, "bird": 2}, top="animals"))
    assert r.status_code == 200, r.json()
    return client


def test_zip_import_and_stats(world, imported):
    stats = imported.get(_base(world)).json()["data"]
    assert stats["num_images"] == 10 and stats["num_classes"] == 3
    assert [(c["name"], c["count"]) for c in stats["class_counts"]] == [
        ("bird", 2),
        ("cat", 5),
        ("dog", 3),
    ]
    # The plan's dataset.json fields.
    assert stats["classes"] == ["bird", "cat", "dog"] and stats["version"] == "1.0"
    assert stats["id"] == str(Dataset.objects.get().pk) and stats["source_format"] == "folder"
    assert stats["task"] == "classification" and stats["imported_at"].endswith("Z")
    assert stats["image_stats"]["num_images"] == 10
    assert stats["total_size"] == sum(DatasetItem.objects.values_list("size", flat=True))
    assert stats["split_names"] == []
    ds = Dataset.objects.get()
    assert ds.kind == "images" and ds.name == "images" and ds.class_names == ["bird", "cat", "dog"]
    stored = sorted(p.name for p in (ds.storage_dir / "images").iterdir())
    assert len(stored) == 10 and not any("img" in name for name in stored)


def test_second_import_adds_and_refuses_duplicates(world, imported):
    r = _import(imported, world, zip_bytes({"fish/a.png": png_bytes()}))
    assert r.status_code == 200 and r.json()["data"]["num_images"] == 11
    r = _import(imported, world, zip_bytes({"fish/a.png": png_bytes()}))
    assert r.status_code == 409


def test_empty_project_stats_and_clear(world, imported):
    other = client_for(world.owner)
    assert imported.delete(_base(world)).status_code == 200
    stats = other.get(_base(world)).json()["data"]
    assert stats["num_images"] == 0 and stats["dataset_id"] is None
    assert not Dataset.objects.exists() and not DatasetItem.objects.exists()
    assert other.get(f"{_base(world)}/images").status_code == 404


def test_listing_sort_filter_search_paginate(world, imported):
    url = f"{_base(world)}/images"
    page = imported.get(url).json()["data"]
    assert page["total"] == 10 and page["page_size"] == 50
    names = [i["path"] for i in page["items"]]
    assert names == sorted(names) and names[0] == "bird/img000.png"
    item = page["items"][0]
    assert set(item) == {
        "filename",
        "width",
        "height",
        "split",
        "annotations",
        "path",
        "class",
        "size",
    }  # the plan's image, then Orchard's extras
    # The plan's name has no class folder, unless another class folder holds the same name.
    assert item["filename"] == "bird/img000.png"
    plan_names = {i["path"]: i["filename"] for i in page["items"]}
    assert plan_names["cat/img004.png"] == "img004.png"
    assert plan_names["dog/img002.png"] == "dog/img002.png"
    assert item["annotations"] == [{"type": "label", "class_id": 0, "class_name": "bird"}]
    assert item["class"] == "bird" and item["height"] == 4

    r = imported.get(url, {"sort_by": "class", "sort_order": "desc"}).json()["data"]
    assert [i["class"] for i in r["items"]][:3] == ["dog"] * 3
    r = imported.get(url, {"sort_by": "size", "page_size": 3, "page": 2}).json()["data"]
    assert r["page"] == 2 and len(r["items"]) == 3 and r["pages"] == 4
    sizes = [i["size"] for i in imported.get(url, {"sort_by": "size"}).json()["data"]["items"]]
    assert sizes == sorted(sizes)
    r = imported.get(url, {"filter_class": "cat"}).json()["data"]
    assert r["total"] == 5 and {i["class"] for i in r["items"]} == {"cat"}
    r = imported.get(url, {"search": "IMG001"}).json()["data"]
    assert sorted(i["path"] for i in r["items"]) == [
        "bird/img001.png",
        "cat/img001.png",
        "dog/img001.png",
    ]
    for bad in ({"sort_by": "colour"}, {"sort_order": "up"}, {"page": "0"}, {"page_size": "x"}):
        assert imported.get(url, bad).status_code == 422, bad


def test_listing_query_count_is_constant(world, imported):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for size in (2, 10):
        with CaptureQueriesContext(connection) as ctx:
            r = imported.get(f"{_base(world)}/images", {"page_size": size})
        assert r.status_code == 200
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]


def test_image_file_thumbnail_info(world, imported):
    url = f"{_base(world)}/images/cat/img002.png"
    r = imported.get(url)
    assert r.status_code == 200 and r["Content-Type"] == "image/png"
    body = b"".join(r.streaming_content)
    assert body == DatasetItem.objects.get(filename="cat/img002.png").path.read_bytes()
    info = imported.get(url + "/info").json()["data"]
    assert info == {
        "filename": "cat/img002.png",  # dog/img002.png exists too
        "width": 8,
        "height": 4,
        "split": [],
        "annotations": [{"type": "label", "class_id": 1, "class_name": "cat"}],
        "path": "cat/img002.png",
        "class": "cat",
        "size": len(body),
    }
    r = imported.get(f"{_base(world)}/thumbnails/cat/img002.png")
    assert r.status_code == 200 and r["Content-Type"] == "image/png"
    thumb = Image.open(io.BytesIO(b"".join(r.streaming_content)))
    assert max(thumb.size) <= 128
    assert imported.get(f"{_base(world)}/images/cat/nope.png").status_code == 404
    # The plan's bare name: unique -> the image; held by several class folders -> 409.
    DatasetItem.objects.exclude(filename__endswith="img002.png").filter(
        filename__endswith="img001.png"
    ).exclude(class_name="cat").delete()
    r = imported.get(f"{_base(world)}/images/img001.png")
    assert r.status_code == 200
    assert imported.get(f"{_base(world)}/images/img001.png/info").json()["data"]["filename"] == (
        "img001.png"
    )
    assert (
        b"".join(r.streaming_content)
        == DatasetItem.objects.get(filename="cat/img001.png").path.read_bytes()
    )
    r = imported.get(f"{_base(world)}/images/img000.png/info")
    assert r.status_code == 409 and "cat/img000.png" in r.json()["error"]["message"]
    assert imported.get(f"{_base(world)}/thumbnails/../../etc/passwd").status_code == 404


def test_large_jpeg_thumbnail_is_cached(world):
    client = client_for(world.owner)
    big = png_bytes(size=(300, 200), fmt="JPEG")
    assert _import(client, world, zip_bytes({"a/big.jpg": big})).status_code == 200
    url = f"{_base(world)}/thumbnails/a/big.jpg"
    r = client.get(url)
    assert r["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(b"".join(r.streaming_content))).size == (128, 85)
    thumbs = list((Dataset.objects.get().storage_dir / "thumbnails").iterdir())
    assert len(thumbs) == 1
    assert client.get(url).status_code == 200
    assert client.get(f"{_base(world)}/images/a/big.jpg")["Content-Type"] == "image/jpeg"


def test_image_arrays_are_decoded_and_cached(world):
    client = client_for(world.owner)
    entries = {
        "a/1.png": png_bytes(size=(4, 3), color=(255, 0, 0)),
        "b/2.png": png_bytes(size=(4, 3), color=(0, 255, 0)),
        "b/3.png": png_bytes(size=(8, 6), color=(0, 0, 255)),
    }
    assert _import(client, world, zip_bytes(entries)).status_code == 200
    ds = Dataset.objects.get()
    x, y = dataset_arrays(ds)
    assert x.shape == (3, 3, 3, 4) and x.dtype == np.float32 and y.tolist() == [0, 1, 1]
    np.testing.assert_allclose(x[0, 0], 1.0) and np.testing.assert_allclose(x[0, 1], 0.0)
    np.testing.assert_allclose(x[2, 2], 1.0, atol=1e-6)
    x2, _ = dataset_arrays(ds, size=(6, 8))
    assert x2.shape == (3, 3, 6, 8)
    assert len(list((ds.storage_dir / "cache").glob("*-inputs.npy"))) == 2


def _gray_png():
    return png_bytes(mode="L", color=128)


ATTACKS = {
    "dotdot": ({"../evil/x.png": _gray_png()}, (), ".."),
    "nested dotdot": ({"cls/../../x.png": _gray_png()}, (), ".."),
    "absolute": ({"/etc/x.png": _gray_png()}, (), "absolute"),
    "drive": ({"C:/x/y.png": _gray_png()}, (), "absolute"),
    "backslash": ({"cls\\x.png": _gray_png()}, (), "backslash"),
    "symlink": ({"cls/link.png": b"/etc/passwd"}, ("cls/link.png",), "symbolic link"),
    "non image": ({"cls/a.png": _gray_png(), "cls/b.png": b"not an image at all"}, (), "cls/b.png"),
    "no class folder": ({"a.png": _gray_png()}, (), "class folder"),
    "too deep": ({"a/b/c/d.png": _gray_png(), "x/y.png": _gray_png()}, (), "class folder"),
}


@pytest.mark.parametrize("case", list(ATTACKS))
def test_zip_attacks_are_refused(world, settings, case):
    entries, links, text = ATTACKS[case]
    r = _import(client_for(world.owner), world, zip_bytes(entries, symlinks=links))
    assert r.status_code == 422, r.json()
    assert text in r.json()["error"]["message"], r.json()
    assert not Dataset.objects.exists() and not DatasetItem.objects.exists()
    root = settings.MEDIA_ROOT / "projects"
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


def test_zip_limits(world, settings):
    client = client_for(world.owner)
    settings.DATASET_ZIP_MAX_MEMBERS = 3
    r = _import(client, world, class_zip({"a": 4}))
    assert r.status_code == 422 and "more than the limit of 3" in r.json()["error"]["message"]
    settings.DATASET_ZIP_MAX_MEMBERS = 100
    settings.DATASET_ZIP_MAX_BYTES = 100
    r = _import(client, world, class_zip({"a": 4}))
    assert r.status_code == 422 and "expands to more than" in r.json()["error"]["message"]
    settings.DATASET_ZIP_MAX_BYTES = 10**9
    # A bomb: a megabyte of zeros compresses ~1000:1.
    r = _import(client, world, zip_bytes({"a/zeros.png": b"\0" * (1 << 20)}))
    assert r.status_code == 422 and "compression ratio" in r.json()["error"]["message"]
    r = _import(client, world, b"this is not a zip")
    assert r.status_code == 422 and "not a ZIP" in r.json()["error"]["message"]
    assert not Dataset.objects.exists()


def test_lying_member_size_is_caught_while_extracting(world):
    data = bytearray(zip_bytes({"a/x.png": png_bytes(size=(20, 20))}))
    # Shrink the declared size in both the local header and the central directory.
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        real = zf.infolist()[0].file_size
    fake = (10).to_bytes(4, "little")
    real_b = real.to_bytes(4, "little")
    patched = bytes(data).replace(real_b, fake)
    r = _import(client_for(world.owner), world, patched)
    assert r.status_code == 422
    assert not Dataset.objects.exists()


def test_viewer_cannot_import_or_clear(world, imported):
    viewer = client_for(world.viewer)
    assert _import(viewer, world, class_zip({"a": 1})).status_code == 403
    assert viewer.delete(_base(world)).status_code == 403
    assert viewer.get(f"{_base(world)}/images").status_code == 200
    member = client_for(world.member)
    # The dataset belongs to the project admin: a member may not change it.
    assert _import(member, world, zip_bytes({"z/q.png": _gray_png()})).status_code == 403
