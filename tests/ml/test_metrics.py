"""Metrics against scikit-learn on random data."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics as skm
import torch

from ml.metrics import accuracy, classification_report, confusion_matrix


@pytest.fixture
def labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    true = rng.integers(0, 6, size=500)
    pred = np.where(rng.random(500) < 0.6, true, rng.integers(0, 6, size=500))
    pred[pred == 5] = 4  # class 5 is never predicted: zero-division case
    return pred, true


def test_accuracy_and_confusion_matrix(labels: tuple[np.ndarray, np.ndarray]) -> None:
    pred, true = labels
    assert accuracy(pred, true) == pytest.approx(skm.accuracy_score(true, pred))
    expected = skm.confusion_matrix(true, pred, labels=range(7))
    assert np.array_equal(confusion_matrix(pred, true, 7), expected)
    assert accuracy(torch.from_numpy(pred), torch.from_numpy(true)) == accuracy(pred, true)
    assert accuracy([], []) == 0.0


def test_classification_report(labels: tuple[np.ndarray, np.ndarray]) -> None:
    pred, true = labels
    names = [f"c{i}" for i in range(6)]
    report = classification_report(pred, true, 6, class_names=names)
    p, r, f, s = skm.precision_recall_fscore_support(true, pred, labels=range(6), zero_division=0)
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(true, pred))
    assert report["num_samples"] == 500
    assert [c["name"] for c in report["per_class"]] == names
    assert [c["precision"] for c in report["per_class"]] == pytest.approx(p)
    assert [c["recall"] for c in report["per_class"]] == pytest.approx(r)
    assert [c["f1"] for c in report["per_class"]] == pytest.approx(f)
    assert [c["support"] for c in report["per_class"]] == s.tolist()
    for avg, key in (("macro", "macro_avg"), ("weighted", "weighted_avg")):
        mp, mr, mf, _ = skm.precision_recall_fscore_support(
            true, pred, labels=range(6), average=avg, zero_division=0
        )
        assert report[key]["precision"] == pytest.approx(mp)
        assert report[key]["recall"] == pytest.approx(mr)
        assert report[key]["f1"] == pytest.approx(mf)
    assert report["confusion_matrix"] == skm.confusion_matrix(true, pred).tolist()
    import json

    json.dumps(report)  # plain Python types only


def test_metric_errors() -> None:
    with pytest.raises(ValueError, match=r"lie in 0\.\.2"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="2 predictions for 3 true labels"):
        accuracy([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="class_names"):
        classification_report([0], [0], 2, class_names=["a"])
