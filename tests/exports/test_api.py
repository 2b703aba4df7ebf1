"""Exports through the API with a real Dramatiq worker: every format from a cluster and from a
checkpoint, the parity check in the status, downloads that load back, failures, deletion."""

import io
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load as safetensors_load

from apps.clusters.runtime import cluster_load_model
from apps.exports.models import Export
from apps.exports.selectors import export_dir
from apps.tasks.models import Task
from ml.checkpoints import read_metadata
from tests.clusters.helpers import make_cluster
from tests.conftest import client_for
from tests.exports.conftest import create_export, export_url, wait_export
from tests.tasks.conftest import wait_state

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
]


def _train(client, project, cluster, dataset, epochs: int = 1) -> dict:
    r = client.post(
        f"/api/projects/{project.pk}/tasks",
        {
            "name": "fit",
            "kind": "train",
            "cluster_id": str(cluster.pk),
            "dataset_id": str(dataset.pk),
            "params": {"epochs": epochs},
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    return r.json()["data"]


def _download(client, project, export: dict) -> bytes:
    response = client.get(export_url(project, export["id"], "download"))
    assert response.status_code == 200, response.content
    assert response["Content-Disposition"] == f'attachment; filename="{export["filename"]}"'
    assert response["Content-Type"] == "application/octet-stream"
    data = b"".join(response.streaming_content)
    assert len(data) == export["size_bytes"]
    import hashlib

    assert hashlib.sha256(data).hexdigest() == export["sha256"]
    return data


def _digits_inputs(dataset, scale: float, n: int = 32) -> np.ndarray:
    from apps.datasets.selectors import dataset_arrays

    x, _ = dataset_arrays(dataset)
    return np.asarray(x[:n], dtype=np.float32).reshape(n, -1) * np.float32(scale)


def _expected(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _check_file(fmt: str, data: bytes, model, x: np.ndarray, scale: float) -> None:
    """The downloaded bytes load back with the format's own tools and reproduce the model.
    The file's scale is from raw values: the digits are uint8 pixels, /255 before `scale`."""
    scale = scale / 255.0
    expected = _expected(model, x)
    if fmt == "onnx":
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
        meta = json.loads({p.key: p.value for p in proto.metadata_props}["orchard"])
        assert meta["input_scale"] == pytest.approx(scale)
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        (actual,) = session.run(["output"], {"input": x})
        np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-5)
    elif fmt == "torchscript":
        extra = {"orchard": ""}
        loaded = torch.jit.load(io.BytesIO(data), _extra_files=extra)
        assert json.loads(extra["orchard"])["input_scale"] == pytest.approx(scale)
        with torch.inference_mode():
            actual = loaded(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-5)
    else:
        state = safetensors_load(data)
        original = model.state_dict()
        assert state.keys() == original.keys()
        assert all(torch.equal(state[k], v) for k, v in original.items())
        meta = json.loads(read_metadata(data)["orchard"])
        assert meta["source"] == "template" and meta["input_scale"] == pytest.approx(scale)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
def test_export_of_a_trained_cluster(fmt, world, digits, stub_worker):
    train_set, _ = digits
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member, name="digits net")
    # Queued behind the training of its cluster: the export sees the trained weights.
    train = _train(client, world.project, cluster, train_set)
    export = create_export(client, world.project, cluster_id=str(cluster.pk), format=fmt)
    assert export["status"] == "pending" and export["export_id"] == export["id"]
    assert export["id"].startswith("export-") and export["download_url"] is None
    assert export["source"] == {
        "type": "cluster",
        "cluster_id": str(cluster.pk),
        "checkpoint_id": None,
        "experiment_id": "",
        "run_id": "",
        "checkpoint": "",
    }

    done = wait_export(client, world.project, export["id"])
    assert done["status"] == "completed", done
    assert wait_state(train["id"]).state == "finished"
    parity = done["validation"]
    assert parity["passed"] is True
    assert 0 <= parity["max_abs_diff"] <= 1e-4
    assert parity["max_diff"] == parity["max_abs_diff"]
    assert (parity["rtol"], parity["atol"]) == (1e-3, 1e-5)
    # Real samples of the dataset the model was trained on, at a batch size it was not traced at.
    assert parity["inputs"] == "dataset" and parity["dataset_id"] == str(train_set.pk)
    assert parity["input_shape"] == [16, 64]
    assert done["details"]["cluster_version"] == 1
    scale = done["details"]["input_scale"]
    cluster.refresh_from_db()
    assert scale == cluster.config["input_scale"]
    assert (
        done["filename"]
        == {
            "onnx": "digits-net-onnx.onnx",
            "torchscript": "digits-net-torchscript.pt",
            "safetensors": "digits-net-safetensors.safetensors",
        }[fmt]
    )
    assert done["download_url"] == f"/api/export/{world.project.pk}/{export['id']}/download"

    data = _download(client, world.project, done)
    cluster.refresh_from_db()
    model = cluster_load_model(cluster)
    _check_file(fmt, data, model, _digits_inputs(train_set, scale), scale)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
def test_export_of_a_checkpoint(fmt, world, digits, stub_worker):
    train_set, _ = digits
    client = client_for(world.owner)
    cluster = make_cluster(world.project, world.owner)
    assert wait_state(_train(client, world.project, cluster, train_set)["id"]).state == "finished"
    r = client.post(
        f"/api/projects/{world.project.pk}/clusters/{cluster.pk}/checkpoints",
        {"name": "epoch-1"},
        format="json",
    )
    assert r.status_code == 201, r.content
    checkpoint_id = r.json()["data"]["id"]
    # Later changes to the cluster do not reach an export of the checkpoint.
    assert wait_state(_train(client, world.project, cluster, train_set)["id"]).state == "finished"
    from apps.clusters.models import Checkpoint
    from apps.clusters.runtime import build_module, read_state
    from apps.clusters.services import checkpoint_path

    options = {"input_shape": [4, 64]} if fmt != "safetensors" else {}
    export = create_export(
        client,
        world.project,
        checkpoint_id=checkpoint_id,
        format=fmt,
        options=options,
        name="my export",
    )
    assert export["source"]["type"] == "checkpoint"
    assert export["source"]["checkpoint_id"] == checkpoint_id
    done = wait_export(client, world.project, export["id"])
    assert done["status"] == "completed", done
    assert done["validation"]["passed"] and done["validation"]["inputs"] == "dataset"
    assert done["filename"].startswith("my-export")

    checkpoint = Checkpoint.objects.get(pk=checkpoint_id)
    state, meta = read_state(checkpoint_path(str(world.project.pk), checkpoint_id))
    model = build_module(source=meta["source"], template=meta["template"], config=meta["config"])
    model.load_state_dict(state)
    model.eval()
    assert not torch.equal(
        model.state_dict()["projections.0_1.weight"],
        cluster_load_model(cluster).state_dict()["projections.0_1.weight"],
    ), "the cluster was trained further after the checkpoint"
    data = _download(client, world.project, done)
    scale = checkpoint.metadata["config"]["input_scale"]
    _check_file(fmt, data, model, _digits_inputs(train_set, scale), scale)


def test_onnx_options_and_random_inputs_for_an_architecture(world, stub_worker):
    """A cnn_small of (1, 8, 8) images never trained: random inputs; a static graph at batch 3;
    simplified (onnxsim, else onnxscript's optimizer), then parity-checked."""
    from apps.clusters.services import cluster_create_from_architecture

    client = client_for(world.member)
    cluster = cluster_create_from_architecture(
        project=world.project,
        actor=world.member,
        name="cnn",
        architecture="cnn_small",
        input_shape=[1, 8, 8],
        num_classes=3,
        seed=0,
    )
    export = create_export(
        client,
        world.project,
        cluster_id=str(cluster.pk),
        format="onnx",
        options={
            "opset_version": 13,
            "input_shape": [3, 1, 8, 8],
            "dynamic_axes": {},
            "simplify": True,
        },
    )
    assert export["options"] == {
        "opset_version": 13,
        "input_shape": [3, 1, 8, 8],
        "dynamic_axes": {},
        "simplify": True,
    }
    done = wait_export(client, world.project, export["id"])
    assert done["status"] == "completed", done
    assert done["validation"]["inputs"] == "random" and done["validation"]["input_shape"] == [
        3,
        1,
        8,
        8,
    ]
    assert done["details"]["simplified"] is True
    assert any(note.startswith("simplified with") for note in done["notes"])

    proto = onnx.load_from_string(_download(client, world.project, done))
    assert proto.opset_import[0].version == 13
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 1, 8, 8]


def test_failed_parity_check_ends_the_export_failed(world, digits, stub_worker, monkeypatch):
    """The written file is not the model (weights changed on the way): the check catches it."""
    import copy

    from ml import export as mlexport

    original = mlexport.export_torchscript

    def tampered(model, **kwargs):
        other = copy.deepcopy(model)
        with torch.no_grad():
            for p in other.parameters():
                p.add_(0.01)
        original(other, **kwargs)

    monkeypatch.setattr(mlexport, "export_torchscript", tampered)
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    export = create_export(client, world.project, cluster_id=str(cluster.pk), format="torchscript")
    done = wait_export(client, world.project, export["id"])
    assert done["status"] == "failed"
    assert done["error"].startswith("Parity check failed: max abs diff")
    assert done["validation"]["passed"] is False and done["validation"]["max_abs_diff"] > 1e-3
    assert done["download_url"] is None and done["size_bytes"] == 0 and done["sha256"] == ""
    task = wait_state(done["task_id"])  # the engine ends the task right after the export
    assert task.state == "failed" and task.error == done["error"]

    r = client.get(export_url(world.project, export["id"], "download"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"
    assert "failed" in r.json()["error"]["message"]
    row = Export.objects.get(pk=export["id"])
    assert not export_dir(row).exists()


def test_download_before_completion_is_a_conflict(world, stub_broker):
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    export = create_export(client, world.project, cluster_id=str(cluster.pk), format="onnx")
    r = client.get(export_url(world.project, export["id"], "download"))
    assert r.status_code == 409
    assert r.json()["error"]["message"].startswith("The export is pending")


def test_the_create_answer_is_the_created_row_without_a_read_back(world, stub_broker):
    """POST answers the export as created (owner and task in memory): no SELECT of the export
    after its INSERT (the view read it back, a third of its time), and the same answer a GET
    gives while it is queued."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    with CaptureQueriesContext(connection) as queries:
        created = create_export(client, world.project, cluster_id=str(cluster.pk), format="onnx")
    reads = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and 'FROM "exports_export"' in q["sql"]
    ]
    assert reads == [], reads
    fetched = client.get(export_url(world.project, created["id"])).json()["data"]
    assert created == fetched
    assert created["status"] == "pending" and created["owner"] == world.member.username


def test_list_get_delete(world, digits, stub_worker):
    owner, member, viewer = (client_for(u) for u in (world.owner, world.member, world.viewer))
    cluster = make_cluster(world.project, world.member)
    first = create_export(member, world.project, cluster_id=str(cluster.pk), format="safetensors")
    second = create_export(member, world.project, cluster_id=str(cluster.pk), format="onnx")
    done = wait_export(member, world.project, first["id"])
    wait_export(member, world.project, second["id"])
    assert done["status"] == "completed"

    listing = viewer.get(export_url(world.project) + "?page_size=1")
    assert listing.status_code == 200
    page = listing.json()["data"]
    assert (page["total"], page["pages"], page["page_size"]) == (2, 2, 1)
    assert [e["id"] for e in page["items"]] == [second["id"]]  # newest first
    only = viewer.get(export_url(world.project) + "?format=safetensors").json()["data"]["items"]
    assert [e["id"] for e in only] == [first["id"]]
    assert viewer.get(export_url(world.project) + "?export_format=zip").status_code == 422

    # Only the owner (bob) or a project admin may delete; viewers never.
    assert viewer.delete(export_url(world.project, first["id"])).status_code == 403
    alice_export = create_export(owner, world.project, cluster_id=str(cluster.pk), format="onnx")
    assert member.delete(export_url(world.project, alice_export["id"])).status_code == 403

    row = Export.objects.get(pk=first["id"])
    path = export_dir(row) / row.file
    assert path.exists()
    r = member.delete(export_url(world.project, first["id"]))
    assert r.status_code == 200
    assert not path.exists() and not export_dir(row).exists()
    assert member.get(export_url(world.project, first["id"])).status_code == 404
    assert member.get(export_url(world.project, first["id"], "download")).status_code == 404
    assert owner.delete(export_url(world.project, second["id"])).status_code == 200  # admin


def test_deleting_a_queued_export_aborts_its_task(world, stub_broker):
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    export = create_export(client, world.project, cluster_id=str(cluster.pk), format="onnx")
    assert client.delete(export_url(world.project, export["id"])).status_code == 200
    task = Task.objects.get(pk=export["task_id"])
    assert task.state == "aborted"
    from apps.tasks.runner import task_run

    task_run(str(task.pk))  # the message still arrives: nothing happens
    assert Task.objects.get(pk=task.pk).state == "aborted"
    assert not Export.objects.filter(pk=export["id"]).exists()


def test_an_export_whose_model_was_deleted_before_it_ran(world, stub_broker):
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    export = create_export(client, world.project, cluster_id=str(cluster.pk), format="onnx")
    r = client.delete(f"/api/projects/{world.project.pk}/clusters/{cluster.pk}")
    assert r.status_code == 204
    data = client.get(export_url(world.project, export["id"])).json()["data"]
    assert data["status"] == "failed" and "deleted" in data["error"]
    assert data["source"]["cluster_id"] is None and data["download_url"] is None


def test_an_export_whose_checkpoint_was_deleted_before_it_ran(world, stub_broker):
    from apps.clusters.services import checkpoint_save
    from apps.tasks.runner import task_run

    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    checkpoint = checkpoint_save(cluster=cluster, actor=world.member, name="cp")
    export = create_export(client, world.project, checkpoint_id=str(checkpoint.pk), format="onnx")
    r = client.delete(f"/api/projects/{world.project.pk}/checkpoints/{checkpoint.pk}")
    assert r.status_code == 204
    task_run(export["task_id"])  # the worker gets to it now
    data = client.get(export_url(world.project, export["id"])).json()["data"]
    assert (data["status"], data["error"]) == ("failed", "The checkpoint was deleted.")
    assert Task.objects.get(pk=export["task_id"]).state == "failed"
