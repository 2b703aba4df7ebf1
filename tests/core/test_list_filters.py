"""The main API's list filters (django-filter FilterSets, apps/core/api/filters.py) answer as the
hand-written checks they replaced: the same parameter names, and an invalid value is the
envelope's VALIDATION_ERROR (422) naming the parameter, with the same messages."""

import uuid

import pytest

from apps.exports.formats import FORMATS
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def _error(r):
    assert r.status_code == 422, r.content
    body = r.json()
    assert body["status"] == "error" and body["error"]["code"] == "VALIDATION_ERROR"
    return body["error"]["message"], body["error"]["details"]


def test_the_dataset_kind(world):
    client, url = client_for(world.owner), f"/api/projects/{world.project.pk}/datasets"
    assert client.get(url, {"kind": "mnist"}).status_code == 200
    assert client.get(url, {"kind": ""}).status_code == 200  # empty: no filter
    message, details = _error(client.get(url, {"kind": "zzz"}))
    reason = "must be one of mnist, csv, images, volume."
    assert (message, details) == (f"kind: {reason}", {"kind": [reason]})


def test_the_export_format_and_its_older_name(world):
    client, url = client_for(world.owner), f"/api/export/{world.project.pk}"
    reason = f"Must be one of {', '.join(FORMATS)}."
    for name in ("format", "export_format"):
        assert client.get(url, {name: "onnx"}).status_code == 200
        assert _error(client.get(url, {name: "zip"})) == (f"{name}: {reason}", {name: [reason]})
    # `format` wins: the older name is then neither read nor refused.
    assert client.get(url, {"format": "onnx", "export_format": "zip"}).status_code == 200
    assert _error(client.get(url, {"format": "zip", "export_format": "onnx"}))[1] == {
        "format": [reason]
    }


def test_the_marketplace_uplet_filters(world):
    client = client_for(world.owner)
    url = f"/api/marketplace/{world.project.pk}/learnuplets"
    assert client.get(url, {"problem": str(uuid.uuid4()), "status": "todo"}).status_code == 200
    message, details = _error(client.get(url, {"problem": "nope", "status": "later"}))
    assert message == "Invalid filter."
    assert details == {
        "problem": ["Must be a valid UUID."],
        "status": ['"later" is not a valid choice.'],
    }
    assert _error(client.get(url, {"algo": ""}))[1] == {"algo": ["Must be a valid UUID."]}
    # A parameter the list does not take is not read.
    problems = f"/api/marketplace/{world.project.pk}/problems"
    assert client.get(problems, {"status": "later", "algo": "nope"}).status_code == 200


def test_the_compute_push_state(world):
    client = client_for(world.owner)
    url = f"/api/marketplace/{world.project.pk}/pushes"
    assert client.get(url, {"state": "pending"}).status_code == 200
    reason = "must be one of pending, delivered, failed."
    for bad in ("sent", ""):  # empty is refused too
        assert _error(client.get(url, {"state": bad})) == (f"state: {reason}", {"state": [reason]})


def test_the_run_filters(world):
    client, url = client_for(world.owner), f"/api/training/{world.project.pk}/runs"
    assert client.get(url, {"status": "completed", "experiment_id": ""}).status_code == 200
    reason = "must be one of pending, running, completed, failed, cancelled."
    assert _error(client.get(url, {"status": "done"})) == (
        f"status: {reason}",
        {"status": [reason]},
    )
    # An unknown experiment is a 404, judged before the other parameters.
    r = client.get(url, {"experiment_id": str(uuid.uuid4()), "status": "done"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "EXPERIMENT_NOT_FOUND"


def test_the_checkpoint_cluster(world):
    from tests.clusters.helpers import make_cluster

    client, base = client_for(world.owner), f"/api/projects/{world.project.pk}"
    cluster = make_cluster(world.project, world.owner)
    saved = client.post(f"{base}/clusters/{cluster.pk}/checkpoints", {"name": "cp"})
    assert saved.status_code == 201, saved.content

    def listed(value):
        r = client.get(f"{base}/checkpoints", {"cluster": value})
        assert r.status_code == 200, r.content
        return [c["id"] for c in r.json()["data"]["items"]]

    assert listed(str(cluster.pk)) == listed("") == [saved.json()["data"]["id"]]
    # Not a cluster id, or another cluster's: no checkpoint, and no error.
    assert listed("nope") == listed(str(uuid.uuid4())) == []
