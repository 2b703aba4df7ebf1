"""Exports of a studio run's checkpoint (`experiment_id`, `run_id`, `checkpoint`: best/last), the
seed's own request shape, with a real run trained through the training API."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load as safetensors_load

from apps.clusters.runtime import build_module, read_state
from apps.clusters.services import checkpoint_path
from apps.training.models import Run
from apps.training.selectors import run_checkpoint_get
from tests.conftest import client_for
from tests.exports.conftest import create_export, export_url, wait_export
from tests.tasks.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _trained_run(client, project, train_set, test_set) -> tuple[str, str]:
    r = client.post(
        f"/api/training/{project.pk}/experiments",
        {
            "name": "digits mlp",
            "dataset_id": str(train_set.pk),
            "val_dataset_id": str(test_set.pk),
            "architecture": "mlp",
            "input_size": [64],
            "epochs": 2,
            "batch_size": 64,
        },
        format="json",
    )
    assert r.status_code == 200, r.content
    exp_id = r.json()["data"]["id"]
    r = client.post(f"/api/training/{project.pk}/experiments/{exp_id}/run", format="json")
    assert r.status_code == 200, r.content
    run_id = r.json()["data"]["run_id"]

    def ended():
        data = client.get(f"/api/training/{project.pk}/runs/{run_id}").json()["data"]
        return data if data["status"] in ("completed", "failed", "stopped") else None

    assert wait_for(ended)["status"] == "completed"
    return exp_id, run_id


def _checkpoint_model(checkpoint):
    state, meta = read_state(checkpoint_path(str(checkpoint.project_id), str(checkpoint.pk)))
    model = build_module(source=meta["source"], template=meta["template"], config=meta["config"])
    model.load_state_dict(state)
    return model.eval(), state


def test_export_of_a_run_checkpoint(world, digits, stub_worker):
    train_set, test_set = digits
    client = client_for(world.member)
    exp_id, run_id = _trained_run(client, world.project, train_set, test_set)
    run = Run.objects.get(pk=run_id)

    # The seed's request, as written (input_shape fitted to this model).
    export = create_export(
        client,
        world.project,
        experiment_id=exp_id,
        run_id=run_id,
        checkpoint="best",
        format="onnx",
        options={
            "opset_version": 17,
            "input_shape": [1, 64],
            "dynamic_axes": {"input": {"0": "batch_size"}, "output": {"0": "batch_size"}},
            "simplify": True,
        },
    )
    best = run_checkpoint_get(run=run, which="best")
    assert export["source"] == {
        "type": "run",
        "cluster_id": None,
        "checkpoint_id": str(best.pk),
        "experiment_id": exp_id,
        "run_id": run_id,
        "checkpoint": "best",
    }
    assert export["name"] == f"{run_id}-best-onnx"
    done = wait_export(client, world.project, export["id"])
    assert done["status"] == "completed", done
    assert done["validation"]["passed"] and done["validation"]["inputs"] == "dataset"
    assert done["validation"]["dataset_id"] == str(train_set.pk)  # the experiment's dataset
    assert done["details"]["checkpoint_id"] == str(best.pk)

    data = b"".join(client.get(export_url(world.project, done["id"], "download")).streaming_content)
    model, _ = _checkpoint_model(best)
    x = np.random.default_rng(1).random((5, 64), dtype=np.float32)
    (actual,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(
        ["output"], {"input": x}
    )
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-5)

    # "last" as safetensors: the file holds exactly the run's last weights.
    export = create_export(
        client, world.project, run_id=run_id, checkpoint="last", format="safetensors"
    )
    done = wait_export(client, world.project, export["id"])
    assert done["status"] == "completed", done
    last = run_checkpoint_get(run=run, which="last")
    assert done["source"]["checkpoint_id"] == str(last.pk)
    data = b"".join(client.get(export_url(world.project, done["id"], "download")).streaming_content)
    _, state = _checkpoint_model(last)
    loaded = safetensors_load(data)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())

    # The run of another experiment, and another project's view of this run: not found.
    r = client.post(
        export_url(world.project),
        {"experiment_id": "exp-000000000000", "run_id": run_id, "format": "onnx"},
        format="json",
    )
    assert r.status_code == 404
    outsider = client_for(world.outsider)
    r = outsider.post(
        export_url(world.other_project), {"run_id": run_id, "format": "onnx"}, format="json"
    )
    assert r.status_code == 404
