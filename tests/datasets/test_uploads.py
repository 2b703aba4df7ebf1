"""Chunked upload sessions and datasets made from them (the Hanami gateway's flow)."""

import pytest

from apps.core.exceptions import ValidationFailed
from apps.datasets import uploads as dataset_uploads
from apps.datasets.models import Dataset, UploadSession
from apps.datasets.selectors import dataset_arrays
from tests.conftest import client_for
from tests.datasets.conftest import idx_bytes, mnist_arrays


def _base(world):
    return f"/api/projects/{world.project.pk}"


def _open(client, world, data: bytes, filename="f.idx"):
    r = client.post(
        f"{_base(world)}/uploads", {"filename": filename, "size": len(data)}, format="json"
    )
    assert r.status_code == 201, r.json()
    return r.json()["data"]


def _put(client, world, upload_id, position, chunk):
    return client.put(
        f"{_base(world)}/uploads/{upload_id}?position={position}",
        chunk,
        content_type="application/octet-stream",
    )


def _send(client, world, data: bytes, chunk=7, order=None):
    session = _open(client, world, data)
    positions = list(range(0, len(data), chunk))
    for pos in order(positions) if order else positions:
        r = _put(client, world, session["id"], pos, data[pos : pos + chunk])
        assert r.status_code == 200, r.json()
    return session["id"]


def test_chunked_upload_out_of_order_with_resends_then_finalize(world):
    client = client_for(world.member)
    images, labels = mnist_arrays(n=12)
    image_bytes, label_bytes = idx_bytes(images, gz=True), idx_bytes(labels)
    session = _open(client, world, image_bytes, filename="../../train-images.gz")
    assert session["received_bytes"] == 0 and session["complete"] is False
    assert session["filename"] == "train-images.gz"
    chunks = list(range(0, len(image_bytes), 10))
    for pos in reversed(chunks[1:]):
        assert (
            _put(client, world, session["id"], pos, image_bytes[pos : pos + 10]).status_code == 200
        )
    # A re-sent chunk changes nothing.
    _put(client, world, session["id"], chunks[-1], image_bytes[chunks[-1] :])
    progress = client.get(f"{_base(world)}/uploads/{session['id']}").json()["data"]
    assert progress["received_bytes"] == len(image_bytes) - 10 and not progress["complete"]
    _put(client, world, session["id"], 0, image_bytes[:10])
    progress = client.get(f"{_base(world)}/uploads/{session['id']}").json()["data"]
    assert progress["complete"] and progress["received_bytes"] == len(image_bytes)
    assert dataset_uploads.upload_session_progress(UploadSession.objects.get(pk=session["id"])) == {
        "uuid": session["id"],
        "complete": True,
        "received_bytes": len(image_bytes),
        "size": len(image_bytes),
    }
    label_id = _send(client, world, label_bytes)
    r = client.post(
        f"{_base(world)}/datasets/from-uploads",
        {"name": "up", "kind": "mnist", "uploads": {"images": session["id"], "labels": label_id}},
        format="json",
    )
    assert r.status_code == 201, r.json()
    ds = Dataset.objects.get(name="up")
    x, y = dataset_arrays(ds)
    assert x.shape == (12, 12) and y.tolist() == labels.tolist()
    assert not UploadSession.objects.get(pk=label_id).path.exists()


def test_upload_bounds_and_limits(world, settings):
    client = client_for(world.owner)
    session = _open(client, world, b"0123456789")
    r = _put(client, world, session["id"], 8, b"abc")
    assert r.status_code == 422 and "position" in r.json()["error"]["details"]
    assert _put(client, world, session["id"], -1, b"a").status_code == 422
    assert (
        client.put(
            f"{_base(world)}/uploads/{session['id']}", b"a", content_type="application/octet-stream"
        ).status_code
        == 422
    )
    settings.UPLOAD_MAX_BYTES = 100
    r = client.post(f"{_base(world)}/uploads", {"filename": "x", "size": 101}, format="json")
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert client.post(f"{_base(world)}/uploads", {"size": 0}, format="json").status_code == 422
    assert (
        client_for(world.viewer)
        .post(f"{_base(world)}/uploads", {"size": 3}, format="json")
        .status_code
        == 403
    )


def test_incomplete_or_bad_uploads_leave_no_dataset(world):
    client = client_for(world.owner)
    images, labels = mnist_arrays(n=5)
    data = idx_bytes(images)
    partial = _open(client, world, data)
    _put(client, world, partial["id"], 0, data[:10])
    label_id = _send(client, world, idx_bytes(labels[:4]))
    body = {"name": "x", "kind": "mnist", "uploads": {"images": partial["id"], "labels": label_id}}
    r = client.post(f"{_base(world)}/datasets/from-uploads", body, format="json")
    assert r.status_code == 422 and "incomplete" in r.json()["error"]["message"]
    assert not Dataset.objects.exists()
    full = _send(client, world, data)
    body["uploads"]["images"] = full
    r = client.post(f"{_base(world)}/datasets/from-uploads", body, format="json")
    assert r.status_code == 422 and "4 labels for 5 images" in r.json()["error"]["message"]
    assert not Dataset.objects.exists()
    body["kind"] = "csv"
    r = client.post(f"{_base(world)}/datasets/from-uploads", body, format="json")
    assert r.status_code == 422 and "needs the uploads file" in r.json()["error"]["message"]


def test_hanami_flow_marks_failed_datasets(world):
    images, labels = mnist_arrays(n=6)
    image_bytes, label_bytes = idx_bytes(images), idx_bytes(labels)
    sessions = {}
    for role, data in (("images", image_bytes), ("labels", b"\x00\x00\x08\x09" + label_bytes[4:])):
        s = dataset_uploads.upload_session_create(
            project=world.project, actor=world.owner, size=len(data), filename=role
        )
        for pos in range(0, len(data), 16):
            dataset_uploads.upload_session_write(session=s, position=pos, data=data[pos : pos + 16])
        sessions[role] = s
    ds = dataset_uploads.dataset_create_pending(
        project=world.project, actor=world.owner, name="h", kind="mnist", uploads=sessions
    )
    assert ds.status == "uploading"
    with pytest.raises(ValidationFailed):
        dataset_uploads.dataset_finalize_upload(dataset=ds)
    ds.refresh_from_db()
    assert ds.status == "failed" and "dimensions" in ds.error

    csv = b"a,b\n1,2\n3,4\n"
    s = dataset_uploads.upload_session_create(
        project=world.project, actor=world.owner, size=len(csv)
    )
    dataset_uploads.upload_session_write(session=s, position=0, data=csv)
    ds = dataset_uploads.dataset_create_pending(
        project=world.project, actor=world.owner, name="c", kind="csv", uploads={"file": s}
    )
    ds = dataset_uploads.dataset_finalize_upload(dataset=ds)
    assert ds.status == "ready" and ds.num_samples == 2 and ds.input_shape == [2]


def test_image_zip_from_uploads_and_foreign_uploads(world):
    from tests.datasets.conftest import class_zip

    owner, member = client_for(world.owner), client_for(world.member)
    zip_id = _send(owner, world, class_zip({"a": 2, "b": 1}), chunk=100)
    body = {"name": "zipped", "kind": "images", "uploads": {"file": zip_id}}
    # Another member may not turn the owner's upload into a dataset.
    assert (
        member.post(f"{_base(world)}/datasets/from-uploads", body, format="json").status_code == 403
    )
    r = owner.post(f"{_base(world)}/datasets/from-uploads", body, format="json")
    assert r.status_code == 201, r.json()
    data = r.json()["data"]
    assert (
        data["status"] == "ready" and data["num_samples"] == 3 and data["class_names"] == ["a", "b"]
    )
    r = owner.post(
        f"{_base(world)}/datasets/from-uploads", {**body, "name": "again"}, format="json"
    )
    assert r.status_code == 409
    r = owner.get(f"{_base(world)}/uploads/not-a-uuid")
    assert r.status_code == 404
