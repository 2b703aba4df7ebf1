"""ml.augment (batch image augmentation), ml.parallel (device lists, DataParallel) and the two
new keywords of ml.training.fit (augment, device_ids)."""

import numpy as np
import pytest
import torch

from ml.architectures import build_architecture
from ml.augment import AugmentConfig, make_augment
from ml.parallel import DeviceListError, data_parallel, parse_devices
from ml.training import FitOptions, TrainConfig, fit


def test_augment_config_validation():
    assert not AugmentConfig().enabled
    assert AugmentConfig.from_dict({"shift": 0.1}).geometric
    assert AugmentConfig.from_dict({"noise": 0.1}).enabled
    assert not AugmentConfig.from_dict({"noise": 0.1}).geometric
    for bad, needle in (
        ({"warp": 1}, "unknown augmentation option"),
        ({"shift": 0.7}, "shift must be between 0 and 0.5"),
        ({"rotate": -1}, "rotate must be between 0 and 180"),
        ({"hflip": "yes"}, "hflip must be true or false"),
        ({"noise": True}, "noise must be a number"),
    ):
        with pytest.raises(ValueError, match=needle):
            AugmentConfig.from_dict(bad)


def test_make_augment_is_off_by_default_and_needs_images():
    assert make_augment({}, (1, 8, 8)) is None
    assert make_augment(None, (64,)) is None
    with pytest.raises(ValueError, match="image input size"):
        make_augment({"hflip": True}, (64,))


def test_flips_mirror_each_sample_exactly_and_keep_the_input_shape():
    torch.manual_seed(0)
    images = torch.rand(64, 1, 5, 7)
    flipped = make_augment({"hflip": True}, (5, 7))(images.reshape(64, 35))
    assert flipped.shape == (64, 35)
    flipped = flipped.reshape(64, 1, 5, 7)
    same = torch.isclose(flipped, images, atol=1e-5).flatten(1).all(1)
    mirrored = torch.isclose(flipped, images.flip(-1), atol=1e-5).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 10 < int(mirrored.sum()) < 54  # about half of them


def test_geometric_and_photometric_changes_are_seeded_and_bounded():
    images = torch.zeros(16, 3, 8, 8)
    images[:, :, 2:6, 2:6] = 1.0
    augment = make_augment(
        {"shift": 0.25, "rotate": 30, "scale": 0.2, "brightness": 0.1}, (3, 8, 8)
    )
    torch.manual_seed(1)
    a = augment(images)
    torch.manual_seed(1)
    b = augment(images)
    assert torch.equal(a, b) and a.shape == images.shape
    assert not torch.allclose(a, images)
    assert float(a.min()) >= -0.1 - 1e-6 and float(a.max()) <= 1.1 + 1e-6


def test_parse_devices():
    assert parse_devices(["cpu"]) is None
    assert parse_devices(["gpu:1", "cuda:0"], gpu_count=2) == [1, 0]
    for devices, needle in (
        (["gpu:0"], r"does not exist on this machine \(no GPU\)"),
        (["gpu:0", "gpu:0"], "listed twice"),
        (["cpu", "gpu:0"], "cannot be combined"),
        (["npu:0"], "unknown device"),
        ([], "non-empty list"),
        ("cpu", "non-empty list"),
    ):
        with pytest.raises(DeviceListError, match=needle):
            parse_devices(devices, gpu_count=0 if devices == ["gpu:0"] else 1)
    with pytest.raises(DeviceListError, match="gpu:0 to gpu:1"):
        parse_devices(["gpu:2"], gpu_count=2)


def test_data_parallel_wraps_only_several_devices():
    model = torch.nn.Linear(2, 2)
    assert data_parallel(model, None) is model and data_parallel(model, [0]) is model
    if not torch.cuda.is_available():
        with pytest.raises(DeviceListError, match="needs CUDA"):
            data_parallel(model, [0, 1])


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return x[:1200], d.target[:1200], x[1200:], d.target[1200:]


def test_fit_with_augmentation_still_learns():
    x, y, xv, yv = _digits()
    model = build_architecture("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)
    augment = make_augment({"shift": 0.1, "noise": 0.02}, (1, 8, 8))
    result = fit(
        model, x, y, TrainConfig(epochs=6), x_val=xv, y_val=yv, options=FitOptions(augment=augment)
    )
    assert result.history[-1].val_accuracy > 0.85


def test_fit_refuses_device_ids_that_do_not_match_the_device():
    x, y, _, _ = _digits()
    model = build_architecture("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)
    # One device id is the plain model; several need CUDA and config.device on the first.
    fit(model, x[:64], y[:64], TrainConfig(epochs=1), options=FitOptions(device_ids=[0]))
    with pytest.raises(ValueError, match="need config.device 'cuda:0'"):
        fit(model, x[:64], y[:64], TrainConfig(epochs=1), options=FitOptions(device_ids=[0, 1]))


@pytest.mark.skipif(torch.cuda.device_count() < 1, reason="needs a GPU")
def test_fit_on_a_gpu_with_data_parallel_over_one_device():
    x, y, xv, yv = _digits()
    model = build_architecture("cnn_small", input_shape=(1, 8, 8), num_classes=10, seed=0)
    augment = make_augment({"shift": 0.1}, (1, 8, 8))
    result = fit(
        model,
        x,
        y,
        TrainConfig(epochs=3, device="gpu:0"),
        x_val=xv,
        y_val=yv,
        options=FitOptions(augment=augment),
    )
    assert result.history[-1].val_accuracy > 0.8
    assert next(model.parameters()).device.type == "cuda"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_fit_with_data_parallel_over_two_gpus():
    x, y, xv, yv = _digits()
    model = build_architecture("cnn_small", input_shape=(1, 8, 8), num_classes=10, seed=0)
    result = fit(
        model,
        x,
        y,
        TrainConfig(epochs=3, device="cuda:0"),
        x_val=xv,
        y_val=yv,
        options=FitOptions(device_ids=[0, 1]),
    )
    assert result.history[-1].val_accuracy > 0.8
    assert not any(k.startswith("module.") for k in model.state_dict())
