"""The training loop on real data (scikit-learn digits), stopping, resuming and train_step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.architectures import build_architecture
from ml.inference import predict_classes
from ml.metrics import accuracy
from ml.networks import build_network
from ml.templates import parse_template
from ml.training import (
    EpochResult,
    FitCallbacks,
    FitOptions,
    TrainConfig,
    evaluate,
    fit,
    learning_rate_at,
    resolve_device,
    train_step,
)
from tests.ml.samples import DIGITS_TEMPLATE, MULTI_TEMPLATE, Digits, Hooks


def _test_accuracy(model: torch.nn.Module, digits: Digits) -> float:
    return accuracy(predict_classes(model, digits.x_test), digits.y_test)


@pytest.mark.slow
def test_template_network_learns_digits_with_defaults(digits: Digits) -> None:
    model = build_network(parse_template(DIGITS_TEMPLATE), seed=0)
    seen: list[EpochResult] = []
    result = fit(model, digits.x_train, digits.y_train, callbacks=Hooks(on_epoch_end=seen.append))
    config = TrainConfig()
    assert result.epochs_completed == config.epochs
    assert not result.stopped
    assert seen == result.history
    assert [r.epoch for r in result.history] == list(range(1, config.epochs + 1))
    assert result.history[-1].loss < result.history[0].loss
    assert result.history[-1].accuracy > 0.95
    assert result.best_epoch is None  # no validation set
    assert _test_accuracy(model, digits) >= 0.97


def test_template_network_accepts_one_hot_labels(digits: Digits) -> None:
    model = build_network(parse_template(DIGITS_TEMPLATE), seed=0)
    one_hot = np.eye(10, dtype=np.float32)[digits.y_train]
    fit(model, digits.x_train, one_hot, TrainConfig(epochs=3))
    assert _test_accuracy(model, digits) > 0.85


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn_small"])
def test_architectures_learn_digits_with_defaults(name: str, digits: Digits) -> None:
    model = build_architecture(name, input_shape=(1, 8, 8), num_classes=10, seed=0)
    result = fit(model, digits.x_train, digits.y_train, x_val=digits.x_test, y_val=digits.y_test)
    assert result.best_epoch is not None
    assert result.best_val_accuracy == max(r.val_accuracy or 0.0 for r in result.history)
    assert all(r.val_loss is not None and r.seconds > 0 for r in result.history)
    assert _test_accuracy(model, digits) >= 0.97


def test_should_stop_stops_within_an_epoch(digits: Digits) -> None:
    model = build_architecture("mlp", input_shape=(64,), num_classes=10, seed=0)
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 2

    config = TrainConfig(epochs=5, stop_check_every=4)
    result = fit(
        model, digits.x_train, digits.y_train, config, callbacks=Hooks(should_stop=should_stop)
    )
    assert result.stopped
    assert result.epochs_completed == 0
    assert result.history == []
    assert calls == 2  # polled every 4 batches, not every batch


def test_should_stop_between_epochs(digits: Digits) -> None:
    model = build_architecture("mlp", input_shape=(64,), num_classes=10, seed=0)
    epochs_seen: list[int] = []
    result = fit(
        model,
        digits.x_train,
        digits.y_train,
        TrainConfig(epochs=5, stop_check_every=10_000),
        callbacks=Hooks(
            on_epoch_end=lambda r: epochs_seen.append(r.epoch),
            should_stop=lambda: len(epochs_seen) >= 2,
        ),
    )
    assert result.stopped
    assert result.epochs_completed == 2
    assert epochs_seen == [1, 2]


@pytest.mark.parametrize("scheduler", [None, "cosine"])
def test_resume_matches_uninterrupted_run(digits: Digits, scheduler: str | None) -> None:
    config = TrainConfig(epochs=4, batch_size=64, scheduler=scheduler, seed=3)
    template = parse_template(DIGITS_TEMPLATE)
    x, y = digits.x_train[:600], digits.y_train[:600]

    full = build_network(template, seed=1)
    fit(full, x, y, config)

    checkpoints: dict[int, tuple[dict, dict]] = {}
    first = build_network(template, seed=1)
    fit(
        first,
        x,
        y,
        config,
        callbacks=Hooks(
            on_checkpoint=lambda epoch, model_state, opt_state: checkpoints.__setitem__(
                epoch, (model_state, opt_state)
            ),
            should_stop=lambda: len(checkpoints) >= 2,
        ),
    )
    assert sorted(checkpoints) == [1, 2]
    model_state, optimizer_state = checkpoints[2]
    assert all(t.device.type == "cpu" for t in model_state.values())

    resumed = build_network(template, seed=99)
    resumed.load_state_dict(model_state)
    result = fit(
        resumed, x, y, config, options=FitOptions(start_epoch=2, optimizer_state=optimizer_state)
    )
    assert result.epochs_completed == 4
    assert [r.epoch for r in result.history] == [3, 4]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert result.optimizer_state_dict()["state"]


def test_weights_match_the_recorded_run() -> None:
    """Same seeds, same weights: a fixed run (validation, cosine schedule, early stopping state,
    checkpoints every epoch) ends on the weights recorded before fit's signature became
    (config, options, callbacks); a change of the numerics fails here."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = (x / 16.0).astype(np.float32)[:400], y.astype(np.int64)[:400]
    model = build_network(parse_template(DIGITS_TEMPLATE), seed=1)
    config = TrainConfig(
        epochs=3, batch_size=32, scheduler="cosine", seed=5, early_stopping_patience=5
    )
    saved: list[int] = []

    class Saving(FitCallbacks):
        def on_checkpoint(self, epoch, model_state, optimizer_state) -> None:
            saved.append(epoch)

    result = fit(
        model,
        x[:300],
        y[:300],
        config,
        x_val=x[300:],
        y_val=y[300:],
        options=FitOptions(early_stopping_state={}),
        callbacks=Saving(),
    )
    sums = [float(p.double().sum()) for p in model.state_dict().values()]
    assert sums == pytest.approx([15.309439, 0.719582, -9.434896, -0.220218], abs=2e-6)
    assert [h.loss for h in result.history] == pytest.approx(
        [2.234534, 2.026731, 1.879229], abs=2e-6
    )
    assert saved == [1, 2, 3]


def test_default_callbacks_keep_no_checkpoints() -> None:
    """Copying the states out costs time: callers that do not override on_checkpoint skip it."""
    assert not FitCallbacks().wants_checkpoint(1)

    class Saving(FitCallbacks):
        def on_checkpoint(self, epoch, model_state, optimizer_state) -> None:
            pass

    assert Saving().wants_checkpoint(1)


def test_learning_rate_schedules() -> None:
    cosine = TrainConfig(epochs=10, learning_rate=0.1, scheduler="cosine")
    assert learning_rate_at(cosine, 0) == pytest.approx(0.1)
    assert learning_rate_at(cosine, 5) == pytest.approx(0.05)
    step = TrainConfig(epochs=9, learning_rate=0.1, scheduler="step", gamma=0.5)
    assert [learning_rate_at(step, e) for e in (0, 2, 3, 6)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.025]
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_other_optimizers_train(digits: Digits, optimizer: str) -> None:
    model = build_architecture("mlp", input_shape=(64,), num_classes=10, seed=0)
    config = TrainConfig(
        epochs=3, optimizer=optimizer, learning_rate=0.05 if optimizer == "sgd" else 2e-3
    )
    result = fit(model, digits.x_train, digits.y_train, config)
    assert result.history[-1].accuracy > 0.8


def test_mse_regression(digits: Digits) -> None:
    model = build_architecture("mlp", input_shape=(64,), num_classes=10, seed=0)
    targets = np.eye(10, dtype=np.float32)[digits.y_train]
    result = fit(model, digits.x_train, targets, TrainConfig(epochs=5, loss="mse"))
    assert result.history[-1].loss < result.history[0].loss
    assert result.history[-1].accuracy > 0.8  # argmax agreement for multi-column targets
    val_loss, val_acc = evaluate(
        model, digits.x_test, np.eye(10, dtype=np.float32)[digits.y_test], loss="mse"
    )
    assert val_loss < 0.05 and val_acc > 0.8


def test_train_step_with_index_and_one_hot_labels(digits: Digits) -> None:
    model = build_network(parse_template(DIGITS_TEMPLATE), seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = torch.from_numpy(digits.x_train[:64])
    labels = torch.from_numpy(digits.y_train[:64])
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    losses = [train_step(model, optimizer, x, labels) for _ in range(20)]
    losses += [train_step(model, optimizer, x, one_hot) for _ in range(20)]
    assert losses[-1] < losses[0]
    assert isinstance(losses[0], float)
    mse = train_step(model, optimizer, x, one_hot, loss="mse")
    assert mse >= 0.0


def test_train_step_multi_output() -> None:
    model = build_network(parse_template(MULTI_TEMPLATE), seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = {"a": torch.rand(8, 4), "b": torch.rand(8, 3)}
    y = {"y": torch.randint(0, 2, (8,)), "z": torch.rand(8, 5)}
    first = train_step(model, optimizer, x, y, loss="auto")
    for _ in range(30):
        last = train_step(model, optimizer, x, y)
    assert last < first
    with pytest.raises(ValueError, match="missing expected values"):
        train_step(model, optimizer, x, {"y": y["y"]})


def test_bad_inputs_are_clear_errors(digits: Digits) -> None:
    model = build_architecture("mlp", input_shape=(64,), num_classes=5, seed=0)
    with pytest.raises(ValueError, match="labels go up to 9 but the model has only 5 outputs"):
        fit(model, digits.x_train, digits.y_train, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="x has 10 samples but y has 9 labels"):
        fit(model, digits.x_train[:10], digits.y_train[:9], TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="x_val and y_val"):
        fit(model, digits.x_train, digits.y_train, x_val=digits.x_test)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("batch_size", -1),
        ("learning_rate", 0.0),
        ("optimizer", "lbfgs"),
        ("scheduler", "linear"),
        ("loss", "hinge"),
        ("device", "tpu"),
        ("seed", -1),
    ],
)
def test_config_validation(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_config_from_dict() -> None:
    config = TrainConfig.from_dict({"epochs": 3, "device": "gpu:1"})
    assert config.epochs == 3
    assert config.to_dict()["device"] == "gpu:1"
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"epoch": 3})


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu:0'"):
        resolve_device("tpu:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("gpu:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("gpu:1") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="has 2 CUDA device"):
        resolve_device("gpu:2")
