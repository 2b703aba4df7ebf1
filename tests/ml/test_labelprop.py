"""ml.labelprop: registration network, propagation up/down/fused, checkpoints, and its quality
against the naive baseline (copy the nearest annotated slice) on generated volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml import labelprop as lp
from ml.checkpoints import state_to_bytes

SHAPE = (24, 64, 64)


def _between_annotations(mask: np.ndarray) -> np.ndarray:
    """The voxels of the unannotated slices between the first and the last annotated one."""
    annotated = lp.annotated_slices(mask)
    region = np.zeros(mask.shape, dtype=bool)
    for z in range(annotated[0], annotated[-1] + 1):
        if z not in annotated:
            region[z] = True
    return region


@pytest.fixture(scope="module")
def volume():
    img, labels = lp.make_volume(SHAPE, seed=0)
    return img, labels, lp.sparse_annotation(labels, 6)


@pytest.fixture(scope="module")
def trained(volume):
    """Trained enough to beat the baseline clearly (about 5 s on one CPU thread)."""
    img, _labels, _mask = volume
    config = lp.LabelPropConfig(size=64, max_epochs=5, base_channels=8, seed=0)
    return lp.train_registration(img, config=config)


@pytest.fixture(scope="module")
def quick(volume):
    """One short epoch: a real, non-zero field, for the tests that do not measure quality."""
    img, _labels, _mask = volume
    config = lp.LabelPropConfig(size=64, max_epochs=1, base_channels=4, seed=0)
    return lp.train_registration(img, config=config)


def test_generated_volumes_move_from_slice_to_slice():
    img, labels = lp.make_volume(SHAPE, seed=3)
    again, _ = lp.make_volume(SHAPE, seed=3)
    assert img.shape == labels.shape == SHAPE
    assert img.dtype == np.float32 and labels.dtype == np.uint8
    np.testing.assert_array_equal(img, again)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert all(labels[z].any() for z in range(SHAPE[0]))
    # Neighbouring slices differ (the shapes drift and grow), distant ones differ more.
    assert lp.dice(labels[1], labels[0]) < 1.0
    assert lp.dice(labels[6], labels[0]) < lp.dice(labels[1], labels[0])


@pytest.mark.slow
def test_propagation_beats_copying_the_nearest_annotated_slice(volume, trained):
    img, labels, mask = volume
    region = _between_annotations(mask)
    baseline = lp.dice(lp.nearest_slice_labels(mask), labels, where=region)
    out = lp.propagate(trained.net, img, mask, size=64)
    fused = lp.dice(out.y_fused, labels, where=region)
    assert trained.epochs_completed == 5 and not trained.stopped
    assert trained.losses[-1] < trained.losses[0]
    assert fused > baseline + 0.02, (fused, baseline)
    # Each direction alone is already a usable propagation; fusing both is as good as the best.
    up = lp.dice(out.y_up, labels, where=region)
    down = lp.dice(out.y_down, labels, where=region)
    assert fused > max(up, down) - 0.01
    ncc = lp.propagate(trained.net, img, mask, size=64, criteria="ncc", reduction="none")
    assert lp.dice(ncc.y_fused, labels, where=region) > baseline + 0.02


def test_outputs_keep_the_annotations_and_the_input_geometry(volume, quick):
    img, _labels, mask = volume
    out = lp.propagate(quick.net, img, mask, size=64)
    arrays = out.as_arrays()
    assert sorted(arrays) == ["Y_down", "Y_fused", "Y_up"]
    for array in arrays.values():
        assert array.shape == SHAPE and array.dtype == np.uint8
    assert out.annotated == list(range(0, SHAPE[0], 6))
    assert out.labels == [1, 2]
    for z in out.annotated:
        for array in arrays.values():
            np.testing.assert_array_equal(array[z], mask[z])
    # Beyond the last annotation only the upward pass reaches; nothing comes from above.
    last = out.annotated[-1]
    assert not out.y_down[last + 1 :].any()
    np.testing.assert_array_equal(out.y_fused[last + 1 :], out.y_up[last + 1 :])


def test_the_axis_is_respected():
    """Propagating along axis 2 of a transposed volume equals axis 0 of the original."""
    img, labels = lp.make_volume((12, 32, 40), seed=1)
    mask = lp.sparse_annotation(labels, 4)
    net = lp.build_net(4, seed=1)
    with torch.no_grad():  # a non-trivial field, not the zero one
        net.flow.weight.normal_(0, 0.05)
    ref = lp.propagate(net, img, mask, size=32)
    moved = lp.propagate(net, np.moveaxis(img, 0, 2), np.moveaxis(mask, 0, 2), z_axis=2, size=32)
    np.testing.assert_array_equal(np.moveaxis(moved.y_fused, 2, 0), ref.y_fused)
    assert moved.y_up.shape == (32, 40, 12)


def test_one_label_only_and_label_values_are_kept():
    img, labels = lp.make_volume((10, 32, 32), seed=2)
    labels = np.where(labels == 2, 7, labels).astype(np.uint8)
    mask = lp.sparse_annotation(labels, 3)
    net = lp.build_net(4)
    everything = lp.propagate(net, img, mask, size=32)
    assert set(np.unique(everything.y_fused)) == {0, 1, 7}
    only = lp.propagate(net, img, mask, size=32, label=7)
    assert set(np.unique(only.y_fused)) == {0, 7}
    assert only.labels == [7]


def test_identity_field_is_a_distance_weighted_blend():
    """With the untrained network (zero field) each slice blends its two annotations, the
    nearer one winning where they disagree."""
    mask = np.zeros((5, 16, 16), dtype=np.uint8)
    mask[0, :, :8] = 1
    mask[4, :, 8:] = 1
    img = np.random.default_rng(0).random((5, 16, 16)).astype(np.float32)
    out = lp.propagate(lp.build_net(4), img, mask, size=16)
    np.testing.assert_array_equal(out.y_up[1:4], np.broadcast_to(mask[0], (3, 16, 16)))
    np.testing.assert_array_equal(out.y_down[1:4], np.broadcast_to(mask[4], (3, 16, 16)))
    np.testing.assert_array_equal(out.y_fused[1], mask[0])
    np.testing.assert_array_equal(out.y_fused[3], mask[4])


def test_warp_moves_by_the_field():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 3, 3] = 1.0
    still = lp.warp(image, torch.zeros(1, 2, 8, 8))
    torch.testing.assert_close(still, image)
    shift = torch.zeros(1, 2, 8, 8)
    shift[:, 0] = 2.0 / 7  # one pixel in x: out(x) = in(x + 1)
    moved = lp.warp(image, shift)
    assert moved[0, 0, 3, 2] == pytest.approx(1.0)
    assert moved[0, 0, 3, 3] == pytest.approx(0.0)


def test_checkpoints_round_trip_and_refuse_other_files(quick, volume):
    img, _labels, mask = volume
    data = lp.checkpoint_to_bytes(quick.net, {"name": "demo"})
    net, meta = lp.checkpoint_from_bytes(data)
    assert meta["format"] == lp.CHECKPOINT_FORMAT and meta["name"] == "demo"
    assert meta["base_channels"] == 4
    a = lp.propagate(quick.net, img, mask, size=64).y_fused
    b = lp.propagate(net, img, mask, size=64).y_fused
    np.testing.assert_array_equal(a, b)
    with pytest.raises(lp.LabelPropError, match="not a labelprop checkpoint"):
        lp.checkpoint_from_bytes(b"PK\x03\x04 a lightning .ckpt is a pickle zip")
    foreign = state_to_bytes({"w": torch.zeros(2)}, {"orchard": "{}"})
    with pytest.raises(lp.LabelPropError, match="not a labelprop checkpoint"):
        lp.checkpoint_from_bytes(foreign)


def test_training_stops_when_asked_and_reuses_a_network():
    img, _ = lp.make_volume((6, 16, 16), seed=0)
    config = lp.LabelPropConfig(size=16, max_epochs=3, base_channels=4)
    stopped = lp.train_registration(img, config=config, should_stop=lambda: True)
    assert stopped.stopped and stopped.epochs_completed == 0 and stopped.losses == []
    seen = []
    first = lp.train_registration(img, config=config, on_epoch=lambda e, loss: seen.append(e))
    assert seen == [1, 2, 3] and len(first.losses) == 3
    again = lp.train_registration(img, config=config, net=first.net)
    assert again.net is first.net


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask": np.zeros((4, 8, 9), np.uint8)}, "does not match"),
        ({"mask": np.zeros((4, 8, 8), np.uint8)}, "annotate at least one slice"),
        ({"criteria": "dice"}, "criteria"),
        ({"reduction": "max"}, "reduction"),
        ({"z_axis": 3}, "z_axis"),
        ({"mask": np.full((4, 8, 8), 0.5, np.float32)}, "integer labels"),
        ({"mask": np.full((4, 8, 8), 300, np.int32)}, "0..255"),
    ],
)
def test_unusable_input_is_refused(kwargs, message):
    img = np.zeros((4, 8, 8), np.float32)
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1, 2:4, 2:4] = 1
    args = {"mask": mask, **kwargs}
    with pytest.raises(lp.LabelPropError, match=message):
        lp.propagate(lp.build_net(4), img, args.pop("mask"), **args)


def test_2d_input_and_bad_configs_are_refused():
    with pytest.raises(lp.LabelPropError, match="3D"):
        lp.train_registration(np.zeros((8, 8), np.float32))
    with pytest.raises(lp.LabelPropError, match="max_epochs"):
        lp.LabelPropConfig(max_epochs=0)
    with pytest.raises(lp.LabelPropError, match="odd"):
        lp.LabelPropConfig(ncc_window=4)


def test_working_size():
    assert lp.working_size(256, (64, 64)) == 64
    assert lp.working_size(100, (300, 200)) == 96
    assert lp.working_size(1, (5, 5)) == lp.MIN_SIZE
    assert lp.working_size(4096, (2000, 2000)) == lp.MAX_SIZE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_matches_cpu(volume, quick):
    img, _labels, mask = volume
    cpu = lp.propagate(quick.net, img, mask, size=64, device="cpu")
    gpu = lp.propagate(quick.net, img, mask, size=64, device="cuda")
    agreement = (cpu.y_fused == gpu.y_fused).mean()
    assert agreement > 0.999
    config = lp.LabelPropConfig(size=64, max_epochs=1, base_channels=8)
    result = lp.train_registration(img, config=config, device="cuda")
    assert next(result.net.parameters()).device.type == "cuda"
