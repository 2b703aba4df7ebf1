"""Every decoder of the datasets surface is bounded by what files declare, checked before it
decompresses or allocates (issue #13): npy/npz volumes, image ZIPs and images, MNIST gzip, upload
sessions. Files are small and crafted; limits are set low with `settings`."""

import gzip
import io
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from apps.core.exceptions import PayloadTooLarge
from apps.datasets import uploads as dataset_uploads
from apps.datasets.idx import idx_bytes as raw_idx_bytes
from apps.datasets.models import Dataset, DatasetItem, UploadSession
from tests.conftest import client_for
from tests.datasets.conftest import png_bytes, upload, zip_bytes

# -- crafted files ----------------------------------------------------------------------------


def npy_header(shape, descr="<f8", fortran=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}
    )
    return buf.getvalue()


def npz_of(members: dict[str, bytes]) -> bytes:
    """An npz whose members are the given raw .npy bytes (deflated, as np.savez_compressed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name + ".npy", data)
    return buf.getvalue()


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR (and its CRC) is patched to declare width x height."""
    data = bytearray(png_bytes(size=(4, 4), mode="L", color=7))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _media_files(settings):
    root = settings.MEDIA_ROOT / "projects"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _dataset_files(settings):
    return [p for p in _media_files(settings) if "/datasets/" in p.as_posix()]


def _post_volume(client, world, file: bytes, labels: bytes | None = None):
    body = {"name": "vol", "file": upload("v.npz", file)}
    if labels is not None:
        body["labels"] = upload("l.npy", labels)
    return client.post(
        f"/api/projects/{world.project.pk}/datasets/volume", body, format="multipart"
    )


def _too_large(response, setting_name: str):
    assert response.status_code == 413, response.content
    error = response.json()["error"]
    assert error["code"] == "PAYLOAD_TOO_LARGE" and setting_name in error["message"], error
    assert error["details"]["limit"] == setting_name, error


# -- 1. npy / npz volumes ---------------------------------------------------------------------


def test_npz_member_declaring_a_huge_shape_is_refused_before_allocating(world, settings):
    # 8 Ti elements of float64 declared in a 200-byte member: before the fix np.load tried to
    # allocate them (MemoryError, a 500).
    fake = npy_header((1 << 20, 1 << 20, 8)) + b"\0" * 64
    r = _post_volume(client_for(world.owner), world, npz_of({"image": fake}))
    _too_large(r, "DATASET_ARRAY_MAX_ELEMENTS")
    assert not Dataset.objects.exists() and _dataset_files(settings) == []


def test_npy_declaring_a_huge_shape_is_refused(world, settings):
    fake = npy_header((1 << 20, 1 << 20, 8)) + b"\0" * 64
    r = _post_volume(client_for(world.owner), world, fake)
    _too_large(r, "DATASET_ARRAY_MAX_ELEMENTS")
    assert not Dataset.objects.exists() and _dataset_files(settings) == []


def test_npz_declared_bytes_and_member_count_are_limited(world, settings):
    client = client_for(world.owner)
    # 1 MiB of zeros compresses to about a kilobyte: the declared size decides, not the upload.
    zeros = np.zeros((4, 64, 64, 16), dtype=np.float64)
    settings.DATASET_ARRAY_MAX_BYTES = 512 * 1024
    _too_large(_post_volume(client, world, npz_bytes(image=zeros)), "DATASET_ARRAY_MAX_BYTES")
    settings.DATASET_ARRAY_MAX_BYTES = 10**9
    settings.DATASET_NPZ_MAX_MEMBERS = 3
    small = np.zeros((2, 2, 2))
    many = npz_bytes(image=small, a=small, b=small, c=small)
    _too_large(_post_volume(client, world, many), "DATASET_NPZ_MAX_MEMBERS")
    settings.DATASET_ARRAY_MAX_ELEMENTS = 100
    _too_large(
        _post_volume(client, world, npy_bytes(np.zeros((5, 5, 5)))), "DATASET_ARRAY_MAX_ELEMENTS"
    )
    assert not Dataset.objects.exists() and _dataset_files(settings) == []


def test_separate_label_file_is_bounded_too(world, settings):
    fake = npy_header((1 << 20, 1 << 20, 8)) + b"\0" * 64
    r = _post_volume(client_for(world.owner), world, npy_bytes(np.zeros((2, 2, 2))), fake)
    _too_large(r, "DATASET_ARRAY_MAX_ELEMENTS")
    assert "labels" in r.json()["error"]["message"]
    assert not Dataset.objects.exists() and _dataset_files(settings) == []


def test_gzipped_npy_is_not_decompressed_past_the_array_limit(world, settings):
    # A gzip of a npy that the array limit refuses: decompression stops at the limit.
    settings.DATASET_ARRAY_MAX_BYTES = 4096
    data = gzip.compress(npy_bytes(np.zeros((64, 64, 64), dtype=np.uint8)))
    r = _post_volume(client_for(world.owner), world, data)
    _too_large(r, "DATASET_ARRAY_MAX_BYTES")
    assert not Dataset.objects.exists() and _dataset_files(settings) == []


@pytest.mark.parametrize(
    "member,text",
    [
        # The zip entry is consistent, but the npy header declares more data than it holds.
        (npy_header((2, 2, 2)) + b"\0" * 8, "declares"),
        (npy_header((2, 2, 2), descr="|O") + b"\0" * 64, "pickles are refused"),
        (b"\x93NUMPY\x09\x00" + b"\0" * 40, "not supported"),
        (b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 200, "unreadable"),
    ],
)
def test_malformed_npz_members_answer_422(world, settings, member, text):
    r = _post_volume(client_for(world.owner), world, npz_of({"image": member}))
    assert r.status_code == 422 and text in r.json()["error"]["message"], r.json()
    assert not Dataset.objects.exists() and _dataset_files(settings) == []


def test_volume_from_npz_with_fortran_order_and_big_endian(world):
    image = np.asfortranarray(np.arange(2 * 3 * 4, dtype=">f4").reshape(2, 3, 4))
    label = np.asfortranarray((np.arange(24) % 3).reshape(2, 3, 4).astype(">i2"))
    r = _post_volume(client_for(world.owner), world, npz_bytes(image=image, label=label))
    assert r.status_code == 201, r.json()
    from apps.datasets.selectors import dataset_arrays

    x, y = dataset_arrays(Dataset.objects.get())
    np.testing.assert_array_equal(x[0], image.astype(np.float32))
    np.testing.assert_array_equal(y[0], label.astype(np.int64))
    assert r.json()["data"]["num_classes"] == 3


# -- 2. image ZIPs stream their members ---------------------------------------------------------


def test_zip_members_are_streamed_not_read_whole(world, settings):
    """A 16 MiB member is copied to disk in chunks: the import holds a few chunks, never the
    member (before the fix each member was read whole, then copied again: 32 MiB and more)."""
    rng = np.random.default_rng(0)
    client = client_for(world.owner)

    def from_uploads(data: bytes):
        session = dataset_uploads.upload_session_create(
            project=world.project, actor=world.owner, size=len(data), filename="z.zip"
        )
        dataset_uploads.upload_session_write(session=session, position=0, data=data)
        body = {"name": "z", "kind": "images", "uploads": {"file": str(session.pk)}}
        return lambda: client.post(
            f"/api/projects/{world.project.pk}/datasets/from-uploads", body, format="json"
        )

    # The same request with a small member first, so that lazy imports (Pillow's plugins,
    # Django's) are not counted below.
    assert from_uploads(zip_bytes({"a/small.png": rng.bytes(1000)}))().status_code == 422
    request = from_uploads(zip_bytes({"a/big.png": rng.bytes(16 << 20)}))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        r = request()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 422 and "not a readable image" in r.json()["error"]["message"]
    assert peak < 8 << 20, peak
    assert not Dataset.objects.exists() and _dataset_files(settings) == []


# -- 3. images: pixels checked from the header ---------------------------------------------------


def _studio_import(client, world, data: bytes):
    return client.post(
        f"/api/datasets/{world.project.pk}/import/upload",
        {"file": upload("d.zip", data, "application/zip")},
        format="multipart",
    )


def test_png_declaring_12000x12000_is_refused_at_import(world, settings):
    r = _studio_import(
        client_for(world.owner),
        world,
        zip_bytes({"a/ok.png": png_bytes(), "a/bomb.png": png_with_size(12000, 12000)}),
    )
    _too_large(r, "IMAGE_MAX_PIXELS")
    assert "a/bomb.png" in r.json()["error"]["message"]
    assert not Dataset.objects.exists() and not DatasetItem.objects.exists()
    assert _dataset_files(settings) == []


def test_image_pixel_limit_is_a_setting(world, settings):
    client = client_for(world.owner)
    settings.IMAGE_MAX_PIXELS = 100 * 100
    r = _studio_import(client, world, zip_bytes({"a/big.png": png_bytes(size=(101, 100))}))
    _too_large(r, "IMAGE_MAX_PIXELS")
    r = _studio_import(client, world, zip_bytes({"a/fits.png": png_bytes(size=(100, 100))}))
    assert r.status_code == 200, r.json()  # the plan answers imports with 200


def test_thumbnail_checks_pixels_before_decoding(world, settings):
    client = client_for(world.owner)
    r = _studio_import(client, world, zip_bytes({"a/big.png": png_bytes(size=(300, 200))}))
    assert r.status_code == 200
    # Stored before the limit was lowered (or before it existed): the thumbnail refuses it.
    settings.IMAGE_MAX_PIXELS = 10_000
    r = client.get(f"/api/datasets/{world.project.pk}/thumbnails/a/big.png")
    _too_large(r, "IMAGE_MAX_PIXELS")
    thumbs = Dataset.objects.get().storage_dir / "thumbnails"
    assert not thumbs.exists() or list(thumbs.iterdir()) == []


# -- 4. MNIST gzip bounded by the idx header ----------------------------------------------------


def _post_mnist(client, world, images: bytes, labels: bytes):
    return client.post(
        f"/api/projects/{world.project.pk}/datasets/mnist",
        {"name": "m", "images": upload("i.gz", images), "labels": upload("l.gz", labels)},
        format="multipart",
    )


def test_mnist_gzip_header_declaring_more_than_the_limit_is_refused(world, settings):
    settings.DATASET_IDX_MAX_BYTES = 10_000
    images = gzip.compress(raw_idx_bytes(np.zeros((100, 28, 28), dtype=np.uint8)))
    labels = gzip.compress(raw_idx_bytes(np.zeros(100, dtype=np.uint8)))
    r = _post_mnist(client_for(world.owner), world, images, labels)
    _too_large(r, "DATASET_IDX_MAX_BYTES")
    assert "[100, 28, 28]" in r.json()["error"]["message"]
    assert not Dataset.objects.exists() and _dataset_files(settings) == []


def test_mnist_gzip_is_never_decompressed_past_its_header(world, settings):
    # A header declaring 2x2x2 bytes followed by 4 MiB of zeros (4 KiB of gzip).
    settings.DATASET_MAX_DECOMPRESSED_BYTES = 1 << 20
    images = gzip.compress(raw_idx_bytes(np.zeros((2, 2, 2), np.uint8)) + b"\0" * (4 << 20))
    labels = raw_idx_bytes(np.zeros(2, dtype=np.uint8))
    r = _post_mnist(client_for(world.owner), world, images, labels)
    assert r.status_code == 422 and "more than the 24 bytes" in r.json()["error"]["message"]
    assert not Dataset.objects.exists() and _dataset_files(settings) == []


# -- 5. open upload sessions per user -----------------------------------------------------------


def _uploads(world):
    return f"/api/projects/{world.project.pk}/uploads"


def test_open_upload_sessions_per_user_are_limited(world, settings):
    settings.UPLOAD_SESSIONS_MAX_OPEN = 2
    client = client_for(world.member)
    ids = []
    for _ in range(2):
        r = client.post(_uploads(world), {"size": 10}, format="json")
        assert r.status_code == 201
        ids.append(r.json()["data"]["id"])
    r = client.post(_uploads(world), {"size": 10}, format="json")
    _too_large(r, "UPLOAD_SESSIONS_MAX_OPEN")
    assert r.json()["error"]["details"] == {"limit": "UPLOAD_SESSIONS_MAX_OPEN", "max": 2}
    assert UploadSession.objects.filter(owner=world.member).count() == 2
    # Another user has their own quota.
    assert (
        client_for(world.owner).post(_uploads(world), {"size": 10}, format="json").status_code
        == 201
    )
    # Deleting an upload frees its place (and its file).
    path = UploadSession.objects.get(pk=ids[0]).path
    assert client.delete(f"{_uploads(world)}/{ids[0]}").status_code == 204
    assert not path.exists()
    assert client.post(_uploads(world), {"size": 10}, format="json").status_code == 201


def test_uploads_turned_into_datasets_no_longer_count(world, settings):
    settings.UPLOAD_SESSIONS_MAX_OPEN = 1
    client = client_for(world.member)
    csv = b"a,b\n1,2\n"
    r = client.post(_uploads(world), {"size": len(csv)}, format="json")
    upload_id = r.json()["data"]["id"]
    _put(client, world, upload_id, 0, csv)
    assert client.post(_uploads(world), {"size": 3}, format="json").status_code == 413
    body = {"name": "t", "kind": "csv", "uploads": {"file": upload_id}}
    r = client.post(f"/api/projects/{world.project.pk}/datasets/from-uploads", body, format="json")
    assert r.status_code == 201, r.json()
    assert client.post(_uploads(world), {"size": 3}, format="json").status_code == 201


# -- 7. uploads: no 500, no 200 that stores nothing ---------------------------------------------


def _put(client, world, upload_id, position, data: bytes, **extra):
    return client.put(
        f"{_uploads(world)}/{upload_id}?position={position}",
        data,
        content_type="application/octet-stream",
        **extra,
    )


def test_writing_into_an_upload_already_turned_into_a_dataset_is_a_conflict(world):
    client = client_for(world.member)
    csv = b"a,b\n1,2\n"
    upload_id = client.post(_uploads(world), {"size": len(csv)}, format="json").json()["data"]["id"]
    assert _put(client, world, upload_id, 0, csv).status_code == 200
    body = {"name": "t", "kind": "csv", "uploads": {"file": upload_id}}
    r = client.post(f"/api/projects/{world.project.pk}/datasets/from-uploads", body, format="json")
    assert r.status_code == 201
    r = _put(client, world, upload_id, 0, csv)
    assert r.status_code == 409, r.content
    assert r.json()["status"] == "error"
    assert "already turned into a dataset" in r.json()["error"]["message"]


def test_a_chunk_that_brings_no_bytes_is_refused(world):
    client = client_for(world.member)
    upload_id = client.post(_uploads(world), {"size": 10}, format="json").json()["data"]["id"]
    # A body the server never reads (no length, e.g. sent chunked to a WSGI server) or an empty
    # one: before the fix both answered 200 with nothing stored.
    r = _put(client, world, upload_id, 0, b"")
    assert r.status_code == 422 and "empty" in r.json()["error"]["message"], r.json()
    r = _put(client, world, upload_id, 0, b"", HTTP_TRANSFER_ENCODING="chunked")
    assert r.status_code == 422
    progress = client.get(f"{_uploads(world)}/{upload_id}").json()["data"]
    assert progress["received_bytes"] == 0
    assert _put(client, world, upload_id, 0, b"0123456789").status_code == 200


def test_an_upload_bound_to_a_dataset_being_uploaded_cannot_be_deleted(world):
    s = dataset_uploads.upload_session_create(project=world.project, actor=world.member, size=4)
    dataset_uploads.dataset_create_pending(
        project=world.project, actor=world.member, name="p", kind="csv", uploads={"file": s}
    )
    r = client_for(world.member).delete(f"{_uploads(world)}/{s.pk}")
    assert r.status_code == 409 and s.path.exists()


def test_a_refused_limit_leaves_no_dataset_uploading(world, settings):
    """From uploads, a limit answers 413 and leaves no row behind (REST) or a failed one
    (Hanami's two-step flow), never one stuck in "uploading"."""
    fake = npz_of({"image": npy_header((1 << 20, 1 << 20, 8)) + b"\0" * 64})
    client = client_for(world.owner)
    upload_id = client.post(_uploads(world), {"size": len(fake)}, format="json").json()["data"][
        "id"
    ]
    assert _put(client, world, upload_id, 0, fake).status_code == 200
    body = {"name": "v", "kind": "volume", "uploads": {"file": upload_id}}
    r = client.post(f"/api/projects/{world.project.pk}/datasets/from-uploads", body, format="json")
    _too_large(r, "DATASET_ARRAY_MAX_ELEMENTS")
    assert not Dataset.objects.exists() and _dataset_files(settings) == []
    session = UploadSession.objects.get(pk=upload_id)
    assert session.dataset_id is None and session.path.exists()  # kept for another attempt

    pending = dataset_uploads.dataset_create_pending(
        project=world.project, actor=world.owner, name="h", kind="volume", uploads={"file": session}
    )
    with pytest.raises(PayloadTooLarge):
        dataset_uploads.dataset_finalize_upload(dataset=pending)
    pending.refresh_from_db()
    assert pending.status == "failed" and "DATASET_ARRAY_MAX_ELEMENTS" in pending.error
    assert _dataset_files(settings) == []


def test_npz_entry_declaring_another_size_than_its_npy_header_is_refused(world, settings):
    """A zip entry whose declared size disagrees with its npy header (here 1 GiB for a 208-byte
    array) is refused before it is extracted; before the fix it was read and accepted."""
    data = npz_bytes(image=np.zeros((2, 2, 2)))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        real = zf.infolist()[0].file_size
    patched = data.replace(struct.pack("<I", real), struct.pack("<I", 1 << 30))
    assert patched != data
    r = _post_volume(client_for(world.owner), world, patched)
    assert r.status_code == 422, r.json()
    assert (
        f"declares {1 << 30} bytes but its npy header declares {real}"
        in r.json()["error"]["message"]
    )
    assert not Dataset.objects.exists() and _dataset_files(settings) == []
