"""Array -> tensor conversion and batched inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.architectures import build_architecture
from ml.data import as_tensors, fits_on_device, input_scale, labels_to_indices
from ml.inference import predict_classes, predict_logits, predict_proba


def test_as_tensors_types_and_one_hot() -> None:
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    x_t, y_t = as_tensors(x, np.array([2, 0, 1]), device="cpu")
    assert x_t.dtype == torch.float32 and x_t.shape == (3, 4)
    assert y_t is not None and y_t.dtype == torch.int64
    one_hot = np.eye(3, dtype=np.float32)[[2, 0, 1]]
    assert torch.equal(as_tensors(x, one_hot, device="cpu")[1], y_t)
    assert torch.equal(as_tensors(x, np.array([[2.0], [0.0], [1.0]]), device="cpu")[1], y_t)
    assert as_tensors(x, None, device=torch.device("cpu"))[1] is None
    _, targets = as_tensors(x, one_hot, device="cpu", task="regression")
    assert targets is not None and targets.dtype == torch.float32 and targets.shape == (3, 3)


def test_big_endian_input() -> None:
    x, _ = as_tensors(np.arange(4, dtype=">i4").reshape(2, 2), None, device="cpu")
    assert x.tolist() == [[0.0, 1.0], [2.0, 3.0]]


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        (np.array([0.5, 1.0]), "whole numbers"),
        (np.array([-1, 1]), "negative"),
        (np.zeros((2, 2, 2)), "1-D indices"),
    ],
)
def test_bad_labels(labels: np.ndarray, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        labels_to_indices(labels)


def test_length_mismatch() -> None:
    with pytest.raises(ValueError, match="x has 3 samples but y has 2 labels"):
        as_tensors(np.zeros((3, 2)), np.zeros(2), device="cpu")


def test_fits_on_device() -> None:
    assert fits_on_device(1024, "cpu")
    assert not fits_on_device(1 << 60, "cpu")


def test_predictions_are_batched_and_restore_mode() -> None:
    model = build_architecture("mlp", input_shape=(1, 8, 8), num_classes=4, seed=0)
    model.train()
    x = np.random.default_rng(0).random((10, 1, 8, 8), dtype=np.float32)
    logits = predict_logits(model, x, batch_size=3)
    assert model.training
    assert logits.shape == (10, 4) and logits.device.type == "cpu"
    with torch.no_grad():
        assert torch.allclose(logits, model(torch.from_numpy(x)), atol=1e-6)
    proba = predict_proba(model, x, batch_size=4)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    classes = predict_classes(model, x, device="cpu")
    assert classes.dtype == np.int64
    assert np.array_equal(classes, proba.argmax(axis=1))
    assert predict_logits(model, x[:0]).shape == (0, 4)


def test_input_scale_brings_inputs_into_minus_one_one() -> None:
    assert input_scale(np.array([[0.0, 0.5], [1.0, 0.2]], dtype=np.float32)) == 1.0
    assert input_scale(np.array([[0, 255], [3, 7]], dtype=np.uint8)) == pytest.approx(1 / 255)
    assert input_scale(np.array([4.0, -8.0])) == pytest.approx(1 / 8)  # the largest |value|
    assert input_scale(np.zeros((0, 3), dtype=np.float32)) == 1.0
