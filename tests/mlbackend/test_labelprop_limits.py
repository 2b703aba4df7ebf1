"""labelprop's `arrays` npz is bounded before it is decompressed (issue #13), MemoryError never
answers 500, and cross-site browser requests are refused; the napari client (no Origin header)
is answered exactly as before."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from apps.mlbackend.models import LabelpropSession, LabelpropVolume, LabelpropWorkspace
from apps.tasks.models import Task
from tests.mlbackend.labelprop_helpers import (
    Napari,
    checkpoint_bytes,
    enable,
    multipart,
    npz_bytes,
    refusal,
    small_volume,
)

pytestmark = pytest.mark.django_db

PARAMS = json.dumps({"z_axis": 0, "checkpoint": "base.ckpt"}).encode()


@pytest.fixture
def napari(world, settings) -> Napari:
    enable(settings, world.project)
    return Napari()


def _text(response) -> str:
    assert response["Content-Type"].startswith("text/plain"), response["Content-Type"]
    return response.content.decode()


def _post(napari, arrays: bytes, route: str = "inference", **extra):
    body, content_type = multipart({"arrays": arrays, "params": PARAMS})
    return napari.client.generic("POST", "/" + route, body, content_type, **extra)


def _npz_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name + ".npy", data)
    return buf.getvalue()


def _header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
    )
    return buf.getvalue()


def _nothing_stored() -> bool:
    return not (
        LabelpropSession.objects.exists()
        or LabelpropVolume.objects.exists()
        or Task.objects.exists()
    )


def _only_refusals() -> bool:
    """Refused requests leave failed sessions (the client's token) and nothing else."""
    return not (
        LabelpropSession.objects.exclude(state="failed").exists()
        or LabelpropSession.objects.exclude(volume=None).exists()
        or LabelpropVolume.objects.exists()
        or Task.objects.exists()
    )


# --- the npz is checked from its headers ---------------------------------------------------------


@pytest.mark.parametrize("route", ["inference", "training"])
def test_npy_header_declaring_32_gib_is_refused_not_a_500(napari, route):
    # 8 Gi float32 voxels (32 GiB) declared in a member of a few hundred bytes: before the fix
    # the server tried to allocate them and answered 500.
    fake = _header((2048, 2048, 2048)) + b"\0" * 64
    response = _post(napari, _npz_of({"img": fake, "mask": _header((2,), "|u1") + b"\0\0"}), route)
    assert response.status_code == 413, response.content
    reason = refusal(napari, response)
    assert "LABELPROP_MAX_VOXELS" in reason and "'img'" in reason
    assert _only_refusals()


def test_declared_bytes_and_entry_count_are_limited(napari, settings):
    zeros = np.zeros((16, 64, 64), dtype=np.float32)  # 256 KiB that compress to ~1 KiB
    settings.LABELPROP_MAX_NPZ_BYTES = 200_000
    response = _post(napari, npz_bytes(img=zeros, mask=zeros.astype(np.uint8)))
    assert response.status_code == 413 and "LABELPROP_MAX_NPZ_BYTES" in refusal(napari, response)
    settings.LABELPROP_MAX_NPZ_BYTES = 10**9
    settings.LABELPROP_NPZ_MAX_MEMBERS = 3
    small = np.zeros(2, dtype=np.uint8)
    response = _post(napari, npz_bytes(img=small, mask=small, hints=small, extra=small))
    assert response.status_code == 413
    assert "LABELPROP_NPZ_MAX_MEMBERS" in refusal(napari, response)
    assert _only_refusals()


def test_zip_entry_and_npy_header_must_agree(napari):
    # The header declares 8 float32 (32 bytes), the member holds 4: refused before reading.
    lying = _header((2, 2, 2)) + b"\0" * 4
    response = _post(napari, _npz_of({"img": lying, "mask": lying}))
    assert response.status_code == 400, response.content
    assert "declares" in refusal(napari, response) and len(_text(response)) < 300
    assert _only_refusals()


def test_memory_error_answers_413_not_500(napari, monkeypatch):
    from apps.mlbackend.labelprop import reading

    def no_memory(count, dtype):
        raise MemoryError

    assert napari.send_ckpt("base.ckpt", checkpoint_bytes()).content == b"ok"
    monkeypatch.setattr(reading, "_allocate", no_memory)
    img, _, mask = small_volume()
    response = _post(napari, npz_bytes(img=img.astype("float32"), mask=mask.astype("uint8")))
    assert response.status_code == 413, response.content
    reason = refusal(napari, response)
    assert "memory" in reason and "LABELPROP_MAX_VOXELS" in reason
    assert _only_refusals()


def test_a_valid_request_still_reads_every_array(napari):
    """The bounded reader returns the arrays np.load would (the session starts and stores the
    volume the client hashed)."""
    from tests.mlbackend.labelprop_helpers import md5

    assert napari.send_ckpt("base.ckpt", checkpoint_bytes()).content == b"ok"
    img, _, mask = small_volume()
    response = napari.inference(img, mask, checkpoint="base.ckpt", gpu=False)
    assert response.status_code == 200, response.content
    session = LabelpropSession.objects.get(pk=_text(response))
    assert session.error == "" and session.volume.hash == md5(img)


# --- cross-site requests -------------------------------------------------------------------------


def test_cross_site_requests_are_refused(napari, settings):
    before = napari.get("get_ckpt_dir").content
    response = napari.client.generic(
        "POST", "/set_ckpt_dir?ckpt_dir=evil", b"", HTTP_ORIGIN="http://evil.example"
    )
    assert response.status_code == 403, response.content
    assert "LABELPROP_ALLOWED_ORIGINS" in _text(response)
    assert napari.get("get_ckpt_dir").content == before
    assert not LabelpropWorkspace.objects.exists()
    for origin in ("null", "http://evil.example:80", "file://", "not a url"):
        response = napari.client.get("/check", HTTP_ORIGIN=origin)
        assert response.status_code == 403, origin
    img, _, mask = small_volume()
    arrays = npz_bytes(img=img.astype("float32"), mask=mask.astype("uint8"))
    response = _post(napari, arrays, HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 403 and _nothing_stored()


def test_same_site_and_listed_origins_are_allowed(napari, settings):
    settings.ALLOWED_HOSTS = ["*", "studio.example", ".lab.example"]
    for origin in ("http://studio.example", "https://gpu.lab.example:8443"):
        response = napari.client.get("/check", HTTP_ORIGIN=origin)
        assert response.status_code == 200 and response.content == b"Hello World!", origin
    # The bare wildcard does not let every site in.
    assert napari.client.get("/check", HTTP_ORIGIN="http://evil.example").status_code == 403
    settings.LABELPROP_ALLOWED_ORIGINS = ["http://viewer.example:9000"]
    response = napari.client.generic(
        "POST", "/set_ckpt_dir?ckpt_dir=mine", b"", HTTP_ORIGIN="http://viewer.example:9000"
    )
    assert response.status_code == 200 and response.content == b"ok"
    assert napari.get("get_ckpt_dir").content == b"mine"
    assert napari.client.get("/check", HTTP_ORIGIN="http://viewer.example").status_code == 403


def test_requests_without_an_origin_are_answered_as_before(napari):
    response = napari.check()
    assert response.status_code == 200 and response.content == b"Hello World!"
    assert napari.set_ckpt_dir("other").content == b"ok"
