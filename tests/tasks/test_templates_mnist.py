"""The seed 784-400-10 template end to end through the job engine: MNIST idx files uploaded over
the API, a cluster from the template, request + check before and after a real train task."""

import io

import numpy as np
import pytest

from ml.templates import MNIST_784_400_10
from tests.conftest import client_for
from tests.datasets.conftest import idx_bytes
from tests.tasks.conftest import wait_state

# Where each class's blob sits on the 28x28 grid (row, col).
CENTRES = [(5, 5), (5, 14), (5, 23), (14, 5), (14, 14), (14, 23), (23, 5), (23, 14), (23, 23)]
CENTRES.append((10, 10))


def blob_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped uint8 images: one bright Gaussian blob per class at a class-dependent place
    (jittered by up to 2 pixels) over uniform noise; labels cycle through 0..9."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    rows, cols = np.mgrid[0:28, 0:28]
    centres = np.array(CENTRES, dtype=np.float64)[labels] + rng.integers(-2, 3, size=(n, 2))
    dist2 = (rows[None] - centres[:, 0, None, None]) ** 2 + (
        cols[None] - centres[:, 1, None, None]
    ) ** 2
    images = 220.0 * np.exp(-dist2 / (2 * 2.5**2)) + rng.uniform(0, 35, size=(n, 28, 28))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def _idx(array: np.ndarray, *, gz: bool) -> io.BytesIO:
    out = io.BytesIO(idx_bytes(array, gz=gz))
    out.name = "data.idx.gz" if gz else "data.idx"
    return out


def _upload(client, project, name: str, n: int, seed: int, gz: bool) -> str:
    images, labels = blob_digits(n, seed)
    r = client.post(
        f"/api/projects/{project.pk}/datasets/mnist",
        {"name": name, "images": _idx(images, gz=gz), "labels": _idx(labels, gz=gz)},
        format="multipart",
    )
    assert r.status_code == 201, r.content
    data = r.json()["data"]
    assert data["num_samples"] == n and data["input_shape"] == [784], data
    return data["id"]


def _task(client, project, kind, cluster_id, dataset_id, **params) -> dict:
    r = client.post(
        f"/api/projects/{project.pk}/tasks",
        {
            "name": kind,
            "kind": kind,
            "cluster_id": cluster_id,
            "dataset_id": dataset_id,
            "params": params,
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    done = wait_state(r.json()["data"]["id"])
    assert done.state == "finished", (done.error, done.traceback)
    return done


def _accuracy(client, project, result_id, dataset_id) -> float:
    r = client.post(
        f"/api/projects/{project.pk}/results/{result_id}/check",
        {"dataset_id": dataset_id},
        format="json",
    )
    assert r.status_code == 200, r.content
    return r.json()["data"]["accuracy"]


@pytest.mark.slow  # about 3 s warm; the first optimizer of a process imports torch._dynamo
@pytest.mark.django_db(transaction=True)
def test_seed_template_learns_mnist_shaped_blobs(world, stub_worker):
    client = client_for(world.member)
    project = world.project
    train_id = _upload(client, project, "blobs-train", 400, seed=1, gz=True)
    test_id = _upload(client, project, "blobs-test", 200, seed=2, gz=False)

    r = client.post(
        f"/api/projects/{project.pk}/clusters",
        {"name": "mnist-784-400-10", "template": MNIST_784_400_10, "seed": 0},
        format="json",
    )
    assert r.status_code == 201, r.content
    cluster = r.json()["data"]
    assert cluster["shape"]["inputs"] == {"test_input": 784}
    assert cluster["shape"]["outputs"] == {"test_output": 10}

    untrained = _task(client, project, "request", cluster["id"], test_id)
    before = _accuracy(client, project, untrained.pk, test_id)

    train = _task(
        client, project, "train", cluster["id"], train_id, epochs=4, batch_size=32, seed=0
    )
    assert train.result["epochs_completed"] == 4
    assert train.result["cluster_version"] == 1
    assert train.result["final_accuracy"] >= 0.9, train.result["history"]

    trained = _task(client, project, "request", cluster["id"], test_id)
    after = _accuracy(client, project, trained.pk, test_id)
    assert before < 50.0, before  # the untrained network is near chance (10 %)
    assert after >= 97.0, (before, after)
