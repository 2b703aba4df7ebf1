"""The console's chart and picture renderers: hostile labels stay text, odd numbers are
skipped, sizes are bounded, and stored epoch events of every generation read the same."""

import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from apps.console import charts, images
from apps.console.views import per_class_rows

HOSTILE = '<script>alert("x")</script>&"'


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def test_line_chart_escapes_labels_and_skips_non_finite_points():
    svg = charts.line_chart(
        [
            (HOSTILE, [(1, 0.5), (2, float("nan")), (3, float("inf")), (4, 0.25)], ""),
            ("val", [(1, 0.7), (2, 0.6)], "4 3"),
        ],
        title=HOSTILE,
    )
    root = parse(svg)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    lines = [e for e in root.iter() if e.tag.endswith("polyline")]
    assert [len(e.get("points").split()) for e in lines] == [2, 2]


def test_line_chart_without_data_and_with_many_points():
    assert "No data yet." in charts.line_chart([("a", [], "")], title="t")
    many = charts.line_chart([("a", [(i, i % 7) for i in range(100_000)], "")], title="t")
    line = next(e for e in parse(many).iter() if e.tag.endswith("polyline"))
    assert len(line.get("points").split()) <= charts.MAX_POINTS + 1


def test_heatmap_and_bars():
    svg = charts.heatmap([[5, 1], [0, 4]], [HOSTILE, "b"], title="cm")
    cells = [e for e in parse(svg).iter() if e.get("class") == "cell"]
    assert len(cells) == 4 and "<script>" not in svg
    assert charts.heatmap([[1, 2]], ["a"], title="bad").count('class="cell"') == 0  # not square
    bars = charts.bar_chart([(f"c{i}", i) for i in range(100)], title="many")
    assert parse(bars) is not None and bars.count('class="bar"') == charts.MAX_LABELS


def test_pictures_are_bounded():
    png = images.sample_png(np.arange(64, dtype=np.float32))  # an 8x8 digit
    assert Image.open(io.BytesIO(png)).size == (96, 96)
    assert images.sample_png(np.zeros(10)) is None  # not square: no picture
    big = images.sample_png(np.random.default_rng(0).random((3, 2000, 1000)))
    assert max(Image.open(io.BytesIO(big)).size) <= images.MAX_SIDE
    volume = np.zeros((4, 16, 16), dtype=np.float32)
    labels = np.zeros((4, 16, 16), dtype=np.uint8)
    labels[2, 4:8, 4:8] = 1
    img = Image.open(io.BytesIO(images.slice_png(volume, labels, 2))).convert("RGB")
    pixels = np.asarray(img)
    assert (pixels[..., 0] != pixels[..., 1]).any()  # the overlay is coloured
    assert images.slice_indices(100) == [20, 40, 60, 80] and images.slice_indices(2) == [0, 1]


def test_per_class_rows_read_both_shapes():
    listed = {"per_class": [{"class": 0, "name": "a", "f1": 0.5}, {"class": 1, "name": "b"}]}
    keyed = {"classes": ["a", "b"], "per_class": {"b": {"f1": 1.0}, "a": {"f1": 0.5}}}
    assert [r["name"] for r in per_class_rows(listed)] == ["a", "b"]
    assert [(r["name"], r["f1"]) for r in per_class_rows(keyed)] == [("a", 0.5), ("b", 1.0)]
    assert per_class_rows({"per_class": "junk"}) == []


@pytest.mark.django_db
def test_run_history_reads_every_stored_event_shape(world):
    from apps.console.selectors import run_history
    from apps.tasks.models import Task, TaskEvent
    from apps.training.models import Experiment, Run

    exp = Experiment.objects.create(project=world.project, owner=world.owner, name="e")
    task = Task.objects.create(project=world.project, owner=world.owner, kind="studio_train")
    run = Run.objects.create(project=world.project, owner=world.owner, experiment=exp, task=task)
    events = [
        {"epoch": 1, "loss": 2.0, "accuracy": 0.1},  # flat, older names
        {"epoch": 2, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.2},
        {"epoch": 3, "metrics": {"train_loss": 0.5, "val_accuracy": 0.9}},
        {"epoch": 2, "train_loss": 0.9, "train_accuracy": 0.6},  # recorded again: the later wins
        {"epoch": "x"},
    ]
    for seq, data in enumerate(events, 1):
        TaskEvent.objects.create(task=task, seq=seq, kind="epoch_end", data=data)
    assert run_history(run=run) == [
        {"epoch": 1, "loss": 2.0, "accuracy": 0.1},
        {"epoch": 2, "loss": 0.9, "accuracy": 0.6},
        {"epoch": 3, "loss": 0.5, "val_accuracy": 0.9},
    ]
