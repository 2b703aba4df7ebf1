"""Fixtures of the training studio tests: small datasets (digits subsets, an image dataset with a
split), API helpers, and the job engine's worker fixtures (shared with tests/tasks)."""

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import client_for
from tests.tasks.conftest import (  # noqa: F401 (fixtures)
    digits,
    stub_broker,
    stub_worker,
    wait_for,
    wait_state,
)


def make_mnist(project, user, name: str, n: int | None = None, *, test: bool = False):
    """A dataset of the scikit-learn digits (train or test part), the first `n` samples."""
    from apps.datasets.demo import digits_arrays
    from apps.datasets.idx import write_idx
    from apps.datasets.imports import dataset_import_mnist

    x_train, y_train, x_test, y_test = digits_arrays()
    images, labels = (x_test, y_test) if test else (x_train, y_train)
    if n is not None:
        images, labels = images[:n], labels[:n]
    with tempfile.TemporaryDirectory() as tmp:
        ip, lp = Path(tmp) / "i", Path(tmp) / "l"
        write_idx(ip, images)
        write_idx(lp, labels)
        return dataset_import_mnist(project=project, actor=user, name=name, images=ip, labels=lp)


@pytest.fixture
def small_digits(world):
    """("small-train" 300 samples, "small-test" 100 samples) of the digits in project A."""
    train = make_mnist(world.project, world.owner, "small-train", 300)
    test = make_mnist(world.project, world.owner, "small-test", 100, test=True)
    return train, test


def image_zip(per_class: int = 8, classes=("bars", "dots", "ring"), size: int = 8) -> bytes:
    """A ZIP of class folders with `per_class` distinct grayscale images of a learnable pattern."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c, cls in enumerate(classes):
            for i in range(per_class):
                img = rng.integers(0, 40, size=(size, size)).astype(np.uint8)
                if c == 0:
                    img[:, ::2] = 220
                elif c == 1:
                    img[::3, ::3] = 250
                else:
                    img[1:-1, 1] = img[1:-1, -2] = img[1, 1:-1] = img[-2, 1:-1] = 230
                png = io.BytesIO()
                Image.fromarray(img, "L").save(png, "PNG")
                zf.writestr(f"{cls}/img{i:03d}.png", png.getvalue())
    return buf.getvalue()


@pytest.fixture
def image_set(world):
    """The studio image dataset of project A (3 classes x 8 images, 8x8) with split 0
    (60/20/20, seed 1)."""
    from apps.datasets.images import dataset_import_images_zip
    from apps.datasets.services import split_create

    dataset = dataset_import_images_zip(
        project=world.project, actor=world.owner, file=io.BytesIO(image_zip())
    )
    split_create(dataset=dataset, name="60-20-20", ratios={"train": 0.6, "val": 0.2, "test": 0.2})
    return dataset


def exp_url(project, *parts) -> str:
    return "/".join([f"/api/training/{project.pk}/experiments", *parts])


def run_url(project, run_id, *parts) -> str:
    return "/".join([f"/api/training/{project.pk}/runs/{run_id}", *parts])


def create_experiment(client, project, **config):
    body = {"name": "exp", **config}
    r = client.post(exp_url(project), body, format="json")
    assert r.status_code == 200, r.content
    return r.json()["data"]


def start_run(client, project, exp_id):
    r = client.post(exp_url(project, exp_id, "run"), format="json")
    assert r.status_code == 200, r.content
    return r.json()["data"]


@pytest.fixture
def owner_client(world):
    return client_for(world.owner)
