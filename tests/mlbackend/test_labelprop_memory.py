"""What one /inference or /training request costs in memory: a few MB of npz can declare GBs of
arrays within the limits (zeros compress ~1000:1). Before, a 512^3 float64 image of zeros (1.2 MB
sent) took the server from 0.7 to 2.9 GB to answer that its mask held no label: the image was
decompressed as float64, copied to float32, copied again to hash it, before the mask was looked
at. Now the request is checked cheapest first and holds its labels (uint8) in memory, never its
image, which goes chunk by chunk into its float32 file."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest

from apps.mlbackend.labelprop import storage
from apps.mlbackend.models import LabelpropSession, LabelpropVolume
from apps.tasks.models import Task
from tests.mlbackend.labelprop_helpers import (
    Napari,
    checkpoint_bytes,
    enable,
    md5,
    multipart,
    npz_bytes,
    refusal,
)

pytestmark = pytest.mark.django_db

SHAPE = (128, 128, 128)  # 2 Mi voxels: 16 MiB as float64, 8 MiB as float32, 2 MiB as uint8
VOXELS = int(np.prod(SHAPE))


@pytest.fixture
def napari(world, settings) -> Napari:
    enable(settings, world.project)
    napari = Napari()
    assert napari.send_ckpt("base.ckpt", checkpoint_bytes()).content == b"ok"
    return napari


def _annotated(every: int = 16) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[::every, 32:96, 40:90] = 1
    mask[::every, 70:80, 10:30] = 2
    return mask


def _image(dtype=np.float64) -> np.ndarray:
    """Values that depend on the position (a transposed copy differs), compressing well."""
    z, y, x = np.indices(SHAPE, sparse=True)
    return ((z // 8) * 100 + (y // 16) * 10 + x // 32).astype(dtype)


def _body(arrays: bytes, checkpoint: str = "base.ckpt") -> tuple[bytes, str]:
    params = b'{"z_axis": 0, "checkpoint": "%s", "device": "cpu"}' % checkpoint.encode()
    return multipart({"arrays": arrays, "params": params})


def _post(napari: Napari, route: str, arrays: bytes, checkpoint: str = "base.ckpt"):
    return napari.client.generic("POST", "/" + route, *_body(arrays, checkpoint))


def _peak(call) -> tuple[object, int]:
    """`call()` and the peak of the memory it allocated (NumPy arrays and bytes included)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


class _CountingZip:
    """Counts the decompressed bytes read from each npz entry while installed."""

    def __init__(self, monkeypatch) -> None:
        self.read: dict[str, int] = {}
        original = zipfile.ZipExtFile.read
        counts = self.read

        def read(member, n=-1):
            data = original(member, n)
            counts[member.name] = counts.get(member.name, 0) + len(data)
            return data

        monkeypatch.setattr(zipfile.ZipExtFile, "read", read)


def test_a_request_refused_for_its_mask_never_decompresses_its_image(napari, monkeypatch):
    arrays = npz_bytes(img=np.zeros(SHAPE, np.float64), mask=np.zeros(SHAPE, np.uint8))
    assert len(arrays) < VOXELS  # 16 MiB of image and 2 MiB of mask sent as a few KB
    body = _body(arrays)
    counting = _CountingZip(monkeypatch)
    response, peak = _peak(lambda: napari.client.generic("POST", "/inference", *body))
    assert response.status_code == 200, response.content
    token = response.content.decode()
    assert "no slice holds a label" in napari.download(token).content.decode()
    # Only the image's npy header was read; before, its 16 MiB, then 24 MiB more in copies.
    assert counting.read["img.npy"] < 1024, counting.read
    assert counting.read["mask.npy"] >= VOXELS
    assert peak < 4 * VOXELS, f"{peak / 2**20:.1f} MiB"  # less than the float32 image alone
    assert not (LabelpropVolume.objects.exists() or Task.objects.exists())


def test_a_request_refused_for_its_params_decompresses_nothing(napari, monkeypatch):
    arrays = npz_bytes(img=np.zeros(SHAPE, np.float64), mask=_annotated())
    body = _body(arrays, checkpoint="gone.ckpt")
    counting = _CountingZip(monkeypatch)
    response, peak = _peak(lambda: napari.client.generic("POST", "/inference", *body))
    assert "no checkpoint named" in napari.download(response.content.decode()).content.decode()
    assert max(counting.read.values()) < 1024, counting.read
    assert peak < VOXELS, f"{peak / 2**20:.1f} MiB"


def test_a_session_holds_its_labels_in_memory_never_its_image(napari):
    img, mask = _image(np.float64), _annotated()
    body = _body(npz_bytes(img=img, mask=mask, hints=np.zeros(SHAPE, np.uint8)))
    assert len(body[0]) < VOXELS
    response, peak = _peak(lambda: napari.client.generic("POST", "/inference", *body))
    assert response.status_code == 200, response.content
    session = LabelpropSession.objects.get(pk=response.content.decode())
    assert session.state == "pending" and session.task_id is not None, session.error
    # mask and hints (2 MiB each) and a chunk or two; before: 16 + 8 + 8 MiB of image and more.
    assert peak < 4 * VOXELS, f"{peak / 2**20:.1f} MiB"
    # The volume is stored as the client hashed it: float32, C order.
    volume = session.volume
    assert volume.hash == md5(img) and volume.shape == list(SHAPE)
    stored = np.load(storage.volume_path(volume), allow_pickle=False)
    assert stored.dtype == np.float32 and stored.flags.c_contiguous
    np.testing.assert_array_equal(stored, img.astype(np.float32))
    assert volume.size_bytes == storage.volume_path(volume).stat().st_size
    np.testing.assert_array_equal(
        np.load(storage.session_dir(session) / storage.MASK_FILE, allow_pickle=False), mask
    )


def test_fortran_order_and_wide_label_dtypes_are_read_as_before(napari):
    """napari layers loaded from NIfTI are often Fortran-ordered (`astype` keeps the order, and
    np.save writes it); training masks may be raw int32 labels."""
    shape = (12, 20, 16)
    img = np.asfortranarray(np.random.default_rng(0).normal(size=shape))
    mask = np.zeros(shape, np.int32)
    mask[::4, 4:12, 3:9] = 7
    mask = np.asfortranarray(mask)
    arrays = npz_bytes(img=img, mask=mask)
    assert np.load(io.BytesIO(arrays))["img"].flags.f_contiguous
    body, content_type = multipart(
        {"arrays": arrays, "params": b'{"shape": 16, "max_epochs": 1, "name": "f"}'}
    )
    response = napari.client.generic("POST", "/training", body, content_type)
    session = LabelpropSession.objects.get(pk=response.content.decode())
    assert session.error == "" and session.volume.hash == md5(img)
    stored = np.load(storage.volume_path(session.volume), allow_pickle=False)
    np.testing.assert_array_equal(stored, img.astype(np.float32))
    stored_mask = np.load(storage.session_dir(session) / storage.MASK_FILE, allow_pickle=False)
    assert stored_mask.dtype == np.uint8
    np.testing.assert_array_equal(stored_mask, mask)
    # The same volume again, image included: found by its hash, stored once.
    response = napari.client.generic("POST", "/training", body, content_type)
    again = LabelpropSession.objects.get(pk=response.content.decode())
    assert again.volume == session.volume and LabelpropVolume.objects.count() == 1
    assert sorted(p.name for p in storage.volume_path(session.volume).parent.iterdir()) == [
        f"{session.volume.pk}.npy"
    ]


def _corrupt(arrays: dict[str, np.ndarray], name: str) -> bytes:
    """An npz whose entries are stored uncompressed, the last byte of `name`'s data flipped: its
    CRC no longer matches, which zipfile finds out only at the end of the entry."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            npy = io.BytesIO()
            np.save(npy, array)
            archive.writestr(key + ".npy", npy.getvalue())
            if key == name:
                entry = npy.getvalue()
    raw = bytearray(buffer.getvalue())
    raw[raw.index(entry) + len(entry) - 1] ^= 0xFF
    return bytes(raw)


@pytest.mark.parametrize("name", ["img", "mask"])
def test_an_array_found_corrupt_as_it_is_read_is_a_malformed_request(napari, world, name):
    from apps.core.storage import project_local_dir

    shape = (8, 16, 16)
    mask = np.zeros(shape, np.uint8)
    mask[::3, 4:9, 4:9] = 1
    arrays = {"img": np.ones(shape, np.float32), "mask": mask}
    response = _post(napari, "inference", _corrupt(arrays, name))
    assert response.status_code == 400, response.content
    assert f"'{name}.npy' is corrupt" in refusal(napari, response)
    assert not (LabelpropVolume.objects.exists() or Task.objects.exists())
    volumes = project_local_dir(str(world.project.pk), "labelprop", "volumes")
    assert list(volumes.iterdir()) == []  # nothing half-written left behind
