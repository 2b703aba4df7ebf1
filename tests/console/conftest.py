"""Fixtures of the console tests: a project with real data made through the API (an image
dataset with a split, a trained run, an evaluation, a volume dataset, a Label Studio backend)."""

import io

import numpy as np
import pytest

from apps.datasets.models import Dataset
from apps.mlbackend.models import LabelStudioBackend
from apps.training.models import Evaluation, Run
from tests.conftest import client_for
from tests.tasks.conftest import stub_broker, stub_worker, wait_state  # noqa: F401 (fixtures)
from tests.training.conftest import image_zip


def api_ok(response, status=(200, 201, 202)):
    assert response.status_code in status, (response.status_code, response.content[:2000])
    return response.json()["data"]


@pytest.fixture
def studio(world, stub_worker):  # noqa: F811
    """Project A with: the studio image dataset (3 classes x 8 images) and its split, an mlp
    experiment trained for 3 epochs, an evaluation of its best checkpoint on the test subset, a
    volume dataset with labels and a Label Studio backend bound to the experiment."""
    api = client_for(world.owner)
    p = world.project.pk
    upload = io.BytesIO(image_zip())
    upload.name = "shapes.zip"
    api_ok(api.post(f"/api/datasets/{p}/import/upload", {"file": upload}, format="multipart"))
    api_ok(
        api.post(
            f"/api/splits/{p}",
            {"name": "60-20-20", "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1},
            format="json",
        )
    )
    exp = api_ok(
        api.post(
            f"/api/training/{p}/experiments",
            {
                "name": "shapes-mlp",
                "split_index": 0,
                "architecture": "mlp",
                "epochs": 3,
                "batch_size": 8,
                "devices": ["cpu"],
            },
            format="json",
        )
    )
    started = api_ok(api.post(f"/api/training/{p}/experiments/{exp['id']}/run", format="json"))
    run = Run.objects.get(pk=started.get("run_id") or started["id"])
    wait_state(run.task_id, timeout=120)
    run.refresh_from_db()
    assert run.status == "completed", (run.task.state, run.task.error)
    created = api_ok(
        api.post(
            f"/api/evaluation/{p}",
            {
                "experiment_id": exp["id"],
                "run_id": run.pk,
                "checkpoint": "best",
                "split_index": 0,
                "split_subset": "all",
                "batch_size": 16,
            },
            format="json",
        )
    )
    evaluation = Evaluation.objects.get(pk=created["id"])
    wait_state(evaluation.task_id, timeout=120)
    evaluation.refresh_from_db()
    assert evaluation.status == "completed", (evaluation.task.state, evaluation.task.error)
    volume = np.zeros((1, 6, 16, 16), dtype=np.float32)
    volume[0, :, 4:12, 4:12] = 1.0
    label = (volume > 0.5).astype(np.uint8)
    npz = io.BytesIO()
    np.savez(npz, image=volume, label=label)
    npz.seek(0)
    npz.name = "vol.npz"
    vol = api_ok(
        api.post(
            f"/api/projects/{p}/datasets/volume", {"file": npz, "name": "vol"}, format="multipart"
        )
    )
    backend = api_ok(
        api.post(
            f"/api/mlbackend/{p}/backends",
            {"name": "ls", "experiment_id": exp["id"]},
            format="json",
        )
    )
    images = Dataset.objects.get(project=world.project, kind="images")
    return {
        "experiment": exp,
        "run": run,
        "evaluation": evaluation,
        "images": images,
        "volume": Dataset.objects.get(pk=vol["id"]),
        "backend": LabelStudioBackend.objects.get(pk=backend["id"]),
    }
