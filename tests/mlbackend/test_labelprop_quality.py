"""Propagation quality on a small, fast subset of the generated family (issue #17; the whole
table is `python -m bench --only labelprop`): Orchard beats copying the nearest annotated slice
and signed-distance interpolation on noisy volumes, hints count as annotations, the recorded
training size is the one used, and a 48x128x128 volume propagates within 10 s of CPU."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from apps.mlbackend.models import LabelpropCheckpoint, LabelpropSession
from ml import labelprop as lp
from ml import volumes_synth as vs
from tests.mlbackend.labelprop_helpers import (
    Napari,
    enable,
    load_npz,
    run_session_task,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _scores(case: vs.Case, net=None, size: int = 64) -> tuple[float, float, float]:
    img, labels = vs.make(case.shape, depth=case.depth, size=case.size, noise=case.noise, seed=3)
    mask, annotated = vs.annotate(labels, case.annotated)
    region = vs.region_between(labels.shape, annotated)
    out = lp.propagate(net, img, mask, size=size, criteria="ncc")
    return (
        lp.dice(out.y_fused, labels, where=region),
        lp.dice(lp.nearest_slice_labels(mask), labels, where=region),
        lp.dice(lp.sdf_interpolation_labels(mask), labels, where=region),
    )


@pytest.mark.parametrize(
    ("shape", "noise", "annotated"),
    [("blobs", 0.10, 3), ("thin", 0.10, 3), ("split", 0.05, 3), ("blobs", 0.20, 2)],
)
def test_beats_both_baselines_on_noisy_volumes(shape, noise, annotated):
    case = vs.Case(shape, noise, 0.0, annotated, 32, 64)
    orchard, nearest, sdf = _scores(case)
    assert orchard > max(nearest, sdf) + 0.02, (orchard, nearest, sdf)


def test_the_learned_warp_helps_on_thin_structures():
    img, labels = vs.make("thin", depth=32, size=64, noise=0.05, seed=3)
    trained = lp.train_registration(img, config=lp.LabelPropConfig(size=64, max_epochs=2))
    assert trained.size == 64
    case = vs.Case("thin", 0.05, 0.0, 3, 32, 64)
    with_net, nearest, sdf = _scores(case, trained.net)
    without, _, _ = _scores(case)
    assert with_net > without > max(nearest, sdf), (with_net, without, nearest, sdf)


def test_hints_are_extra_annotations():
    img, labels = vs.make("blobs", depth=32, size=64, noise=0.10, seed=4)
    mask, annotated = vs.annotate(labels, 2)
    hints = np.zeros_like(labels)
    middle = (annotated[0] + annotated[1]) // 2
    hints[middle] = labels[middle]
    region = vs.region_between(labels.shape, annotated)
    region[middle] = False
    plain = lp.propagate(None, img, mask)
    hinted = lp.propagate(None, img, mask, hints=hints)
    assert hinted.hint_slices == [middle] and plain.hint_slices == []
    np.testing.assert_array_equal(hinted.y_fused[middle], labels[middle])
    better = lp.dice(hinted.y_fused, labels, where=region)
    assert better > lp.dice(plain.y_fused, labels, where=region) + 0.005


def test_inference_of_48x128x128_within_10_s_of_cpu():
    img, labels = vs.make("blobs", depth=48, size=128, noise=0.10, seed=5)
    mask, _ = vs.annotate(labels, 3)
    net = lp.build_net(16)  # the client's default: a 16-channel net at the slice's size
    start = time.process_time()
    out = lp.propagate(net, img, mask, size=256, criteria="ncc")
    assert time.process_time() - start < 10.0
    assert out.y_fused.shape == img.shape


@pytest.mark.django_db
def test_hints_reach_the_propagation_and_the_training_size_is_the_one_used(world, settings):
    settings.TASK_HEARTBEAT_INTERVAL_S = 3600
    enable(settings, world.project)
    napari = Napari()
    img, labels = vs.make("blobs", depth=12, size=32, noise=0.05, seed=6)
    mask, annotated = vs.annotate(labels, 2)
    # Trained with the widget's default shape (256) on 32x32 slices: 32 is what was used.
    token = napari.training(img, mask, shape=256, max_epochs=1, checkpoint_name="small").content
    assert run_session_task(token.decode()).state == "finished"
    checkpoint = LabelpropCheckpoint.objects.get(name="small.ckpt")
    assert checkpoint.metadata["size"] == 32
    assert LabelpropSession.objects.get(pk=token.decode()).summary["size"] == 32

    hints = np.zeros_like(labels)
    hints[6] = labels[6]
    token = napari.inference(img, mask, checkpoint="small.ckpt", hints=hints).content.decode()
    assert run_session_task(token).state == "finished"
    result = load_npz(b"".join(napari.download(token).streaming_content))
    np.testing.assert_array_equal(result["Y_fused"][6], labels[6])
    assert LabelpropSession.objects.get(pk=token).summary["hint_slices"] == [6]
