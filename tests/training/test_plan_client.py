"""Conformance: a client of the training studio written only from its plan documents
(pablo-rojas/ai-studio@6d984aa, plan/09-api/*, plan/02-data-layer/*, plan/05-training/*,
plan/06-experiment-tracking/*, plan/07-evaluation/*, plan/08-export/*) walks the whole journey:
project, ZIP import with `format`, browse, splits, an experiment with the plan's default
configuration (the backbone and epochs set through the plan's own fields so that it trains in
seconds on a CPU), run, SSE, stop, resume, metrics, evaluation, export, download, system.

Every request and every expectation comes from the plan: envelopes `{"status": "ok", "data"}`
with 200, the plan's field names and error codes. Orchard's additions are never read. The only
thing the plan does not have is authentication: the client sends a Bearer token.
"""

import io
import zipfile

import numpy as np
import onnx
import pytest
from asgiref.sync import async_to_sync

from apps.accounts.services import token_pair_for
from tests.conftest import client_for
from tests.training.conftest import image_zip, wait_for
from tests.training.sse import SSEClient

pytestmark = pytest.mark.django_db(transaction=True)

# plan/02-data-layer/00-storage-layout.md (experiment.json) and plan/05-training/01: the
# classification defaults, as the plan writes them.
PLAN_DEFAULT = {
    "model": {"backbone": "resnet50", "head": "classification", "pretrained": True},
    "hyperparameters": {
        "optimizer": "adam",
        "learning_rate": 0.001,
        "weight_decay": 0.0001,
        "scheduler": "cosine",
        "batch_size": 32,
        "max_epochs": 50,
        "early_stopping_patience": 10,
    },
    "augmentations": {
        "train": [
            {"name": "RandomHorizontalFlip", "params": {"p": 0.5}},
            {"name": "RandomRotation", "params": {"degrees": 15}},
            {"name": "ColorJitter", "params": {"brightness": 0.2, "contrast": 0.2}},
            {"name": "Resize", "params": {"size": [224, 224]}},
            {"name": "Normalize", "params": {"mean": [0.5], "std": [0.25]}},
        ],
        "val": [
            {"name": "Resize", "params": {"size": [224, 224]}},
            {"name": "Normalize", "params": {"mean": [0.5], "std": [0.25]}},
        ],
    },
    "hardware": {"selected_devices": ["cpu"], "precision": "32"},
}
RUN_STATUSES = {"pending", "running", "completed", "failed", "cancelled"}


class PlanClient:
    """JSON over HTTP with the plan's envelope."""

    def __init__(self, user):
        self.http = client_for(user)
        self.token = token_pair_for(user=user)["access"]

    def call(self, method: str, path: str, body=None, *, expect: int = 200, **kwargs):
        response = getattr(self.http, method)(path, body, format="json", **kwargs)
        assert response.status_code == expect, (method, path, response.content[:1000])
        payload = response.json()
        if expect in (200, 201):
            assert payload["status"] == "ok", payload
            return payload["data"]
        assert payload["status"] == "error" and set(payload["error"]) >= {"code", "message"}
        return payload["error"]

    def get(self, path, **kw):
        return self.call("get", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("post", path, body, **kw)


def plan_zip() -> bytes:
    """The conftest's class folders, with the plan's kind of names: unique across folders."""
    source = zipfile.ZipFile(io.BytesIO(image_zip(per_class=10)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for member in source.namelist():
            folder, name = member.split("/")
            zf.writestr(f"{folder}/{folder}_{name}", source.read(member))
    return out.getvalue()


def _stream(path: str, token: str, last_event_id=None) -> list:
    async def read():
        sse = await SSEClient.open(path, token=token, last_event_id=last_event_id, timeout=30)
        assert sse.status == 200 and sse.headers["content-type"].startswith("text/event-stream")
        events = await sse.events_until_end(timeout=60)
        await sse.close()
        return events

    return async_to_sync(read)()


def test_a_plan_client_walks_the_whole_journey(world, stub_worker, settings):
    settings.TASK_HEARTBEAT_INTERVAL_S = 0.05  # stop requests are read by the heartbeat
    settings.TASK_EVENT_INTERVAL_S = 0.05
    api = PlanClient(world.owner)

    # --- 1. Projects ---------------------------------------------------------------------------
    project = api.call(
        "post",
        "/api/projects",
        {"name": "Plan client", "task": "classification"},
        expect=200,  # the plan: 200 with the envelope
    )
    assert set(project) >= {"id", "name", "task", "created_at"} and project["id"].startswith(
        "proj-"
    )
    pid = project["id"]
    listed = api.get("/api/projects")
    assert isinstance(listed, list) and pid in [p["id"] for p in listed]
    error = api.post("/api/projects", {"name": "boxes", "task": "object_detection"}, expect=422)
    assert error["code"] == "VALIDATION_ERROR"
    error = api.get("/api/datasets/proj-000000000000", expect=404)
    assert error["code"] == "NOT_FOUND"

    # --- 2. Dataset: ZIP import with `format`, browse --------------------------------------------
    error = api.post(
        f"/api/splits/{pid}", {"name": "x", "ratios": {"train": 1, "val": 0}}, expect=422
    )
    assert error["code"] in ("DATASET_NOT_IMPORTED", "VALIDATION_ERROR")
    r = api.http.post(
        f"/api/datasets/{pid}/import/upload?format=folder",
        {"file": io.BytesIO(plan_zip())},
        format="multipart",
    )
    assert r.status_code == 200, r.content
    info = api.get(f"/api/datasets/{pid}")
    assert info["version"] == "1.0" and info["task"] == "classification"
    assert info["source_format"] == "folder" and info["imported_at"].endswith("Z")
    assert info["classes"] == ["bars", "dots", "ring"]
    assert info["image_stats"]["num_images"] == 30 and info["image_stats"]["formats"] == ["png"]
    assert info["image_stats"]["min_width"] == info["image_stats"]["max_width"] == 8
    page = api.get(
        f"/api/datasets/{pid}/images?page=1&page_size=5&sort_by=filename&sort_order=asc"
        "&filter_class=dots"
    )
    images = page["items"] if isinstance(page, dict) else page
    assert len(images) == 5
    image = images[0]
    assert "/" not in image["filename"] and image["split"] == []
    assert image["annotations"] == [{"type": "label", "class_id": 1, "class_name": "dots"}]
    assert (image["width"], image["height"]) == (8, 8)
    raw = api.http.get(f"/api/datasets/{pid}/images/{image['filename']}")
    assert raw.status_code == 200 and raw["Content-Type"] == "image/png"
    thumb = api.http.get(f"/api/datasets/{pid}/thumbnails/{image['filename']}")
    assert thumb.status_code == 200
    assert (
        api.get(f"/api/datasets/{pid}/images/{image['filename']}/info")["filename"]
        == (image["filename"])
    )

    # --- 3. Splits -------------------------------------------------------------------------------
    body = {"name": "60-20-20", "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 42}
    preview = api.get(f"/api/splits/{pid}/preview?train=0.6&val=0.2&test=0.2&seed=42")
    split = api.post(f"/api/splits/{pid}", body)
    assert split["split_index"] == 0 and split["name"] == "60-20-20"
    assert split["stats"] == {"train": 18, "val": 6, "test": 6}
    assert preview["stats"] == split["stats"]
    assert api.get(f"/api/splits/{pid}")["split_names"] == ["60-20-20"]
    assert api.get(f"/api/splits/{pid}/0")["stats"] == split["stats"]
    assert api.get(f"/api/splits/{pid}/7", expect=404)["code"] == "SPLIT_NOT_FOUND"

    # --- 4. Experiment with the plan's default configuration ------------------------------------
    error = api.post(
        f"/api/training/{pid}/experiments", {**PLAN_DEFAULT, "split_index": 0}, expect=422
    )
    assert "pretrained" in error["message"] or "pretrained" in str(error.get("details"))
    config = {
        **PLAN_DEFAULT,
        "split_index": 0,
        "model": {**PLAN_DEFAULT["model"], "backbone": "resnet_tiny", "pretrained": False},
        "hyperparameters": {
            **PLAN_DEFAULT["hyperparameters"],
            "max_epochs": 400,
            "batch_size": 8,
            "early_stopping_patience": 0,
        },
        "augmentations": {
            "train": [
                {**step, "params": {"size": [8, 8]}} if step["name"] == "Resize" else step
                for step in PLAN_DEFAULT["augmentations"]["train"]
            ],
            "val": [
                {**step, "params": {"size": [8, 8]}} if step["name"] == "Resize" else step
                for step in PLAN_DEFAULT["augmentations"]["val"]
            ],
        },
    }
    experiment = api.post(f"/api/training/{pid}/experiments", config)
    exp_id = experiment["id"]
    assert exp_id.startswith("exp-") and experiment["name"]  # auto-named
    assert experiment["model"]["backbone"] == "resnet_tiny"
    assert experiment["hyperparameters"]["max_epochs"] == 400
    assert experiment["hyperparameters"]["scheduler"] == "cosine"
    assert experiment["augmentations"]["val"] == config["augmentations"]["val"]
    assert experiment["hardware"] == {"selected_devices": ["cpu"], "precision": "32"}
    assert api.get(f"/api/training/{pid}/experiments/{exp_id}")["split_index"] == 0
    listed = api.get(f"/api/training/{pid}/experiments")
    listed = listed["items"] if isinstance(listed, dict) else listed
    assert [e["id"] for e in listed] == [exp_id]
    missing = api.get(f"/api/training/{pid}/experiments/exp-000000000000", expect=404)
    assert missing["code"] == "EXPERIMENT_NOT_FOUND"

    # --- 5. Run, SSE, stop, resume ---------------------------------------------------------------
    started = api.post(f"/api/training/{pid}/experiments/{exp_id}/run")
    run_id = started["run_id"]
    assert run_id.startswith("run-") and started["status"] == "pending"
    busy = api.post(f"/api/training/{pid}/experiments/{exp_id}/run", expect=409)
    assert busy["code"] == "TRAINING_IN_PROGRESS"
    run_url = f"/api/training/{pid}/runs/{run_id}"
    wait_for(lambda: len(api.get(f"{run_url}/metrics")["epochs"]) >= 2, 60)
    api.post(f"{run_url}/stop")
    stopped = wait_for(lambda: (d := api.get(run_url))["status"] in ("cancelled", "failed") and d)
    assert stopped["status"] == "cancelled"
    done_before = len(api.get(f"{run_url}/metrics")["epochs"])
    events = _stream(f"{run_url}/stream", api.token)
    names = [e.event for e in events]
    assert names.count("epoch_end") == done_before and names[-1] == "status"
    epoch = next(e.data for e in events if e.event == "epoch_end")
    assert epoch["epoch"] == 1 and epoch["max_epochs"] == 400
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(epoch["metrics"])
    assert events[-1].data["status"] == "cancelled"

    # Resume, and let it finish after a few more epochs: the experiment is changed meanwhile
    # (a run keeps its frozen configuration), so stop it again and resume once more.
    resumed = api.post(f"{run_url}/resume")
    assert resumed["status"] == "pending"
    wait_for(lambda: len(api.get(f"{run_url}/metrics")["epochs"]) > done_before + 1, 60)
    api.post(f"{run_url}/stop")
    run = wait_for(lambda: (d := api.get(run_url))["status"] in ("cancelled", "failed") and d)
    assert run["status"] == "cancelled"
    metrics = api.get(f"{run_url}/metrics")
    epochs = [m["epoch"] for m in metrics["epochs"]]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > done_before
    assert {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"} <= set(
        metrics["epochs"][-1]
    )
    assert run["status"] in RUN_STATUSES and run["experiment_id"] == exp_id
    assert run["best_epoch"] >= 1 and list(run["best_metric"]) == ["val_accuracy"]
    assert set(run["final_metrics"]) >= {"train_loss", "val_loss", "val_accuracy"}
    assert api.get(f"/api/training/{pid}/runs/run-000000000000", expect=404)["code"] == (
        "RUN_NOT_FOUND"
    )

    # --- 6. Evaluation -------------------------------------------------------------------------
    request = {
        "experiment_id": exp_id,
        "run_id": run_id,
        "checkpoint": "best",
        "split_index": 0,
        "split_subset": "test",
        "batch_size": 32,
    }
    evaluation = api.post(f"/api/evaluation/{pid}", request)
    eval_url = f"/api/evaluation/{pid}/{evaluation['id']}"
    result = wait_for(lambda: (d := api.get(eval_url))["status"] in ("completed", "failed") and d)
    assert result["status"] == "completed", result
    assert result["progress"] == {"processed": 6, "total": 6}
    aggregate = result["results"]
    assert 0 <= aggregate["accuracy"] <= 1
    assert set(aggregate["per_class"]) == {"bars", "dots", "ring"}
    assert len(aggregate["confusion_matrix"]) == 3
    per_image = api.get(f"{eval_url}/results?page=1&page_size=50&sort_by=confidence")
    per_image = per_image["items"] if isinstance(per_image, dict) else per_image
    assert len(per_image) == 6
    item = per_image[0]
    assert "/" not in item["filename"] and isinstance(item["correct"], bool)
    assert set(item["ground_truth"]) >= {"class_id", "class_name"}
    assert set(item["prediction"]) >= {"class_id", "class_name", "confidence"}
    assert set(item["probabilities"]) == {"bars", "dots", "ring"}

    # --- 7. Export, download ---------------------------------------------------------------------
    formats = api.get("/api/export/formats")
    assert {"name": "onnx", "display_name": "ONNX", "available": True}.items() <= formats[0].items()
    export_body = {
        "experiment_id": exp_id,
        "run_id": run_id,
        "checkpoint": "best",
        "format": "onnx",
        "options": {
            "opset_version": 17,
            "input_shape": [1, 1, 8, 8],
            "dynamic_axes": {"input": {"0": "batch_size"}, "output": {"0": "batch_size"}},
            "simplify": True,
        },
    }
    error = api.post(f"/api/export/{pid}", {**export_body, "format": "tensorrt"}, expect=422)
    assert error["code"] == "EXPORT_FORMAT_UNAVAILABLE"
    export = api.post(f"/api/export/{pid}", export_body)
    export_url = f"/api/export/{pid}/{export['id']}"
    done = wait_for(lambda: (d := api.get(export_url))["status"] in ("completed", "failed") and d)
    assert done["status"] == "completed", done
    assert (done["experiment_id"], done["run_id"], done["checkpoint"]) == (exp_id, run_id, "best")
    assert done["output_file"] == "model.onnx" and done["output_size_mb"] > 0
    assert done["validation"]["passed"] is True and done["validation"]["max_diff"] < 1e-4
    assert [
        e["id"]
        for e in (lambda d: d["items"] if isinstance(d, dict) else d)(api.get(f"/api/export/{pid}"))
    ] == [export["id"]]
    download = api.http.get(f"{export_url}/download")
    assert download.status_code == 200
    model = onnx.load_from_string(b"".join(download.streaming_content))
    onnx.checker.check_model(model)
    assert model.graph.input[0].name == "input" and model.graph.output[0].name == "output"
    assert api.call("delete", export_url)["deleted"] is True

    # --- 8. System -------------------------------------------------------------------------------
    assert api.get("/api/system/health")
    devices = api.get("/api/system/devices")
    assert devices["devices"][0] == {"id": "cpu", "name": "CPU", "type": "cpu"}
    assert devices["default_selected"] in (["cpu"], ["gpu:0"])
    assert isinstance(devices["cuda_available"], bool)
    assert api.get("/api/system/workspace")

    # --- 9. Deletes answer envelopes -------------------------------------------------------------
    assert api.call("delete", eval_url)
    assert api.call("delete", run_url)
    assert api.call("delete", f"/api/training/{pid}/experiments/{exp_id}")
    assert api.call("delete", f"/api/splits/{pid}/0")
    assert api.call("delete", f"/api/datasets/{pid}")
    assert np.isfinite(aggregate["accuracy"])
