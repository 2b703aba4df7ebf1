"""Object detection: `<RectangleLabels>` over `<Image>` (Label Studio's object detection
template), trained from the rectangle annotations Label Studio's webhooks carry and predicted as
`rectanglelabels` regions in percent of the image, as Label Studio 1.23 stores them."""

import io

import numpy as np
import pytest
from PIL import Image

from apps.mlbackend.labelstudio import runtime
from apps.mlbackend.labelstudio.connect import clear_check_cache
from apps.mlbackend.labelstudio.services import backend_create
from apps.tasks.models import Task
from apps.tasks.runner import task_run
from ml.detection import boxes_from_cells, cell_classes, crop, grid_patches
from tests.clusters.helpers import make_cluster, template
from tests.mlbackend.labelstudio_helpers import (
    LabelStudioClient,
    data_uri,
    ls_annotation,
    ls_task,
    predict_body,
    webhook_body,
)

pytestmark = pytest.mark.django_db

DETECTION_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Square" background="green"/>
    <Label value="Ring" background="blue"/>
  </RectangleLabels>
</View>"""
SIZE = 64  # pixels; objects are half the image wide, at one of four places


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.TASK_HEARTBEAT_INTERVAL_S = 3600  # task_run() inside the test's transaction
    runtime.clear_cache()
    clear_check_cache()
    yield
    runtime.clear_cache()


def _scene(kind: str, corner: int) -> tuple[bytes, tuple[float, float, float, float]]:
    pixels = np.zeros((SIZE, SIZE), dtype=np.uint8)
    half = SIZE // 2
    top, left = (corner // 2) * half, (corner % 2) * half
    if kind == "Square":
        pixels[top : top + half, left : left + half] = 255
    else:
        pixels[top : top + half, left : left + half] = 255
        pixels[top + 5 : top + half - 5, left + 5 : left + half - 5] = 0
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, "PNG")
    box = (left * 100 / SIZE, top * 100 / SIZE, 50.0, 50.0)
    return buffer.getvalue(), box


def _rectangle(box, label: str) -> dict:
    x, y, width, height = box
    return {
        "original_width": SIZE,
        "original_height": SIZE,
        "image_rotation": 0,
        "value": {
            "x": x,
            "y": y,
            "width": width,
            "height": height,
            "rotation": 0,
            "rectanglelabels": [label],
        },
        "id": "r1",
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "origin": "manual",
    }


def test_grid_cells_classes_crops_and_boxes():
    image = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    cells = grid_patches(image, 2)
    assert cells.shape == (4, 2, 4, 4)
    assert np.array_equal(cells[1], image[:, :4, 4:]) and np.array_equal(cells[2], image[:, 4:, :4])
    classes = cell_classes([(50, 0, 50, 100, "B"), (0, 0, 10, 10, "A")], ["A", "B"], 2)
    assert classes.tolist() == [2, 1, 2, 1]  # (0,0,10,10) covers no cell centre
    assert crop(image, (50, 50, 50, 50), (2, 2)).shape == (2, 2, 2)
    assert crop(image, (100, 100, 0, 0), (2, 2)) is None
    probabilities = np.array([[0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0, 0, 1], [0.9, 0.05, 0.05]])
    assert boxes_from_cells(probabilities, ["A", "B"], 2) == [
        {"x": 0.0, "y": 0.0, "width": 100.0, "height": 50.0, "label": "B", "score": 0.75},
        {"x": 50.0, "y": 50.0, "width": 50.0, "height": 50.0, "label": "A", "score": 0.9},
    ]


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def test_rectangles_trained_from_annotations_and_predicted_in_label_studios_format(world):
    # 8x8 cells (64 inputs), two labels and background: 3 outputs.
    cluster = make_cluster(
        world.project, world.owner, text=template(inputs=64, hidden=32, outputs=3)
    )
    backend = backend_create(
        project=world.project,
        actor=world.owner,
        name="boxes",
        cluster=cluster,
        label_config=DETECTION_CONFIG,
        train_params={"epochs": 60, "learning_rate": 0.01, "batch_size": 16},
    )
    assert backend.interface["kind"] == "detection"
    ls = LabelStudioClient(backend.pk)
    n = 0
    for kind in ("Square", "Ring"):
        for corner in range(4):
            n += 1
            png, box = _scene(kind, corner)
            annotation = ls_annotation(n, n, "label", "image", "unused")
            annotation["result"] = [_rectangle(box, kind)]
            body = webhook_body(
                "ANNOTATION_CREATED",
                DETECTION_CONFIG,
                annotation,
                ls_task(n, {"image": data_uri(png)}),
            )
            r = ls.post("webhook", body)
            assert r.status_code == 201 and r.json()["result"]["label"] == kind
    r = ls.post("webhook", webhook_body("START_TRAINING", DETECTION_CONFIG))
    job = r.json()["result"]["job"]
    task_run(job)
    task = Task.objects.get(pk=job)
    assert task.state == "finished", (task.error, task.traceback)
    assert task.result["samples"] == 8 * 16 + 8  # every cell, and every rectangle's crop

    cases = [("Ring", 3), ("Square", 0), ("Square", 2)]
    scenes = [_scene(kind, corner) for kind, corner in cases]
    tasks = [ls_task(100 + i, {"image": data_uri(png)}) for i, (png, _) in enumerate(scenes)]
    tasks.append(ls_task(200, {"image": "data:image/png;base64,AAAA"}))  # unreadable
    r = ls.post("predict", predict_body(tasks, DETECTION_CONFIG))
    assert r.status_code == 200, r.content
    results = r.json()["results"]
    for item, (kind, _), (_, truth) in zip(results, cases, scenes, strict=False):
        assert item["model_version"] == "1.1.0"
        (region,) = item["result"]
        assert (region["from_name"], region["to_name"], region["type"]) == (
            "label",
            "image",
            "rectanglelabels",
        )
        value = region["value"]
        assert value["rectanglelabels"] == [kind] and value["rotation"] == 0
        box = (value["x"], value["y"], value["width"], value["height"])
        assert _iou(box, truth) > 0.5, (box, truth)
    assert results[3]["result"] == [] and "not a readable image" in results[3]["error"]
