"""The exported file says exactly how to feed it (issue #18): a consumer that knows nothing but
the ONNX file's own metadata (scale, mean, std, layout, color, resize) decodes the dataset's
image files, runs the file with onnxruntime and gets the evaluation's predictions, image for
image. Everything goes through the API: ZIP import, split, a plan experiment that normalises,
run, evaluation, export, download."""

import io
import json
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from tests.conftest import client_for
from tests.exports.conftest import export_url, wait_export
from tests.tasks.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

COLOURS = {"red": (200, 40, 30), "green": (30, 190, 60), "blue": (40, 50, 210)}
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def colour_zip(per_class: int = 8) -> bytes:
    """RGB images of three colours with noise, in sizes that differ from the trained 12x12 (so
    the file's `resize` matters), as class folders."""
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls, rgb in COLOURS.items():
            for i in range(per_class):
                h, w = (20, 16) if i % 2 else (15, 22)
                noise = rng.integers(-60, 60, size=(h, w, 3))
                pixels = np.clip(np.asarray(rgb) + noise, 0, 255).astype(np.uint8)
                png = io.BytesIO()
                Image.fromarray(pixels, "RGB").save(png, "PNG")
                zf.writestr(f"{cls}/{cls}_{i:02d}.png", png.getvalue())
    return buf.getvalue()


def _ok(response):
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    return body["data"]


def _pipeline():
    return [
        {"name": "Resize", "params": {"size": [12, 12]}},
        {"name": "ToTensor", "params": {}},
        {"name": "Normalize", "params": {"mean": MEAN, "std": STD}},
    ]


def _feed(raw: bytes, props: dict[str, str]) -> np.ndarray:
    """One image file -> the model's input, from nothing but the file's metadata."""
    scale = json.loads(props["scale"])
    mean, std = np.float32(json.loads(props["mean"])), np.float32(json.loads(props["std"]))
    height, width = json.loads(props["resize"])
    assert props["layout"] == "NCHW" and props["input_kind"] == "pixels"
    with Image.open(io.BytesIO(raw)) as img:
        img = img.convert(props["color"])
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(img, dtype=np.float32)
    x = pixels.transpose(2, 0, 1) * np.float32(scale)  # HWC -> CHW
    x = (x - mean[:, None, None]) / std[:, None, None]
    return x[None].astype(np.float32)


def test_exported_metadata_reproduces_the_evaluation(world, stub_worker):
    client = client_for(world.owner)
    pid = world.project.pk
    r = client.post(
        f"/api/datasets/{pid}/import/upload?format=folder",
        {"file": io.BytesIO(colour_zip())},
        format="multipart",
    )
    assert _ok(r)["image_stats"]["num_images"] == 24
    split = {"name": "60-20-20", "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 4}
    _ok(client.post(f"/api/splits/{pid}", split, format="json"))
    experiment = _ok(
        client.post(
            f"/api/training/{pid}/experiments",
            {
                "split_index": 0,
                "model": {"backbone": "cnn_small", "dropout": 0.0},
                "hyperparameters": {
                    "max_epochs": 2,
                    "batch_size": 8,
                    "warmup_epochs": 0,
                    "early_stopping_patience": 0,
                },
                "augmentations": {"train": _pipeline(), "val": _pipeline()},
                "hardware": {"selected_devices": ["cpu"], "precision": "32"},
            },
            format="json",
        )
    )
    run = _ok(client.post(f"/api/training/{pid}/experiments/{experiment['id']}/run"))

    def run_ended():
        data = _ok(client.get(f"/api/training/{pid}/runs/{run['run_id']}"))
        return data if data["status"] in ("completed", "failed", "cancelled") else None

    assert wait_for(run_ended, 120)["status"] == "completed"
    source = {"experiment_id": experiment["id"], "run_id": run["run_id"], "checkpoint": "best"}
    evaluation = _ok(
        client.post(
            f"/api/evaluation/{pid}",
            {**source, "split_index": 0, "split_subset": "all", "batch_size": 4},
            format="json",
        )
    )

    def evaluated():
        data = _ok(client.get(f"/api/evaluation/{pid}/{evaluation['id']}"))
        return data if data["status"] in ("completed", "failed") else None

    assert wait_for(evaluated, 60)["status"] == "completed"
    results = _ok(client.get(f"/api/evaluation/{pid}/{evaluation['id']}/results?page_size=200"))
    items = results["items"] if isinstance(results, dict) else results
    assert len(items) == 24

    export = _ok(
        client.post(
            export_url(world.project),
            {
                **source,
                "format": "onnx",
                "options": {"opset_version": 17, "input_shape": [1, 3, 12, 12], "simplify": True},
            },
            format="json",
        )
    )
    done = wait_export(client, world.project, export["id"])
    assert done["status"] == "completed" and done["validation"]["passed"], done
    data = b"".join(client.get(export_url(world.project, done["id"], "download")).streaming_content)

    props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    assert json.loads(props["scale"]) == pytest.approx(1 / 255)
    assert json.loads(props["mean"]) == MEAN and json.loads(props["std"]) == STD
    assert props["color"] == "RGB" and json.loads(props["resize"]) == [12, 12]
    assert json.loads(props["class_names"]) == sorted(COLOURS)
    assert json.loads(props["orchard"])["input_scale"] == pytest.approx(1 / 255)

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for item in items:
        raw = client.get(f"/api/datasets/{pid}/images/{item['filename']}")
        assert raw.status_code == 200, item["filename"]
        image = b"".join(raw.streaming_content)
        (logits,) = session.run(["output"], {"input": _feed(image, props)})
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert int(probs.argmax()) == item["predicted_class"], item
        assert float(probs.max()) == pytest.approx(item["confidence"], abs=1e-4), item
    # The metadata is not decorative: without the normalisation the outputs differ.
    unnormalised = {**props, "mean": "[0, 0, 0]", "std": "[1, 1, 1]"}
    (plain,) = session.run(["output"], {"input": _feed(image, unnormalised)})
    (right,) = session.run(["output"], {"input": _feed(image, props)})
    assert np.abs(plain - right).max() > 1e-2
