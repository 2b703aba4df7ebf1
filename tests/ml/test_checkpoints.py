"""safetensors checkpoints: round trips, optimizer state and mismatch messages."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ml.architectures import build_architecture
from ml.checkpoints import (
    CheckpointError,
    CheckpointMismatch,
    load_compatible,
    optimizer_state_from_bytes,
    optimizer_state_to_bytes,
    read_metadata,
    state_from_bytes,
    state_to_bytes,
)
from ml.networks import build_network
from ml.templates import parse_template
from tests.ml.samples import DIGITS_TEMPLATE


def test_state_round_trip_with_metadata() -> None:
    model = build_architecture("resnet_tiny", input_shape=(1, 8, 8), num_classes=10, seed=0)
    data = state_to_bytes(model.state_dict(), {"architecture": "resnet_tiny", "epoch": "3"})
    assert b"pickle" not in data[:64]
    state, metadata = state_from_bytes(data)
    assert metadata == {"architecture": "resnet_tiny", "epoch": "3"}
    assert read_metadata(data) == metadata
    other = build_architecture("resnet_tiny", input_shape=(1, 8, 8), num_classes=10, seed=1)
    load_compatible(other, state)
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_views_and_tied_weights_are_saved() -> None:
    shared = nn.Linear(4, 4)
    state = {"a": shared.weight, "b": shared.weight, "view": shared.weight[:, :2]}
    loaded, _ = state_from_bytes(state_to_bytes(state, {}))
    assert torch.equal(loaded["a"], loaded["b"])
    assert torch.equal(loaded["view"], shared.weight[:, :2].detach())


def test_bad_bytes_and_metadata() -> None:
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        state_from_bytes(b"\x80\x04not safetensors at all")
    with pytest.raises(TypeError, match="str to str"):
        state_to_bytes({}, {"epoch": 3})  # type: ignore[dict-item]


def test_mismatch_names_the_parameter() -> None:
    template = parse_template(DIGITS_TEMPLATE)
    small = build_network(parse_template(DIGITS_TEMPLATE.replace("128", "64")), seed=0)
    model = build_network(template, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatch) as caught:
        load_compatible(model, small.state_dict())
    assert caught.value.key == "projections.0_1.weight"
    assert str(caught.value) == (
        "parameter 'projections.0_1.weight' has shape (64, 64) in the checkpoint "
        "but (128, 64) in the model"
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched

    state = dict(model.state_dict())
    del state["projections.1_2.bias"]
    with pytest.raises(CheckpointMismatch, match=r"missing 'projections\.1_2\.bias'"):
        load_compatible(model, state)
    state = dict(model.state_dict(), extra=torch.zeros(1))
    with pytest.raises(CheckpointMismatch, match="unexpected key 'extra'"):
        load_compatible(model, state)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_optimizer_state_round_trip(kind: str) -> None:
    model = build_architecture("mlp", input_shape=(8,), num_classes=3, seed=0)
    if kind == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        loss = model(torch.rand(4, 8)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    data = optimizer_state_to_bytes(optimizer.state_dict(), {"run": "r1"})
    state, metadata = optimizer_state_from_bytes(data)
    assert metadata == {"run": "r1"}
    fresh = type(optimizer)(model.parameters(), lr=0.5)
    fresh.load_state_dict(state)
    original = optimizer.state_dict()
    restored = fresh.state_dict()
    assert restored["param_groups"][0]["lr"] == original["param_groups"][0]["lr"]
    for pid, entries in original["state"].items():
        for name, value in entries.items():
            assert torch.equal(
                torch.as_tensor(restored["state"][pid][name]), torch.as_tensor(value)
            )
    with pytest.raises(CheckpointError, match="no optimizer state"):
        optimizer_state_from_bytes(state_to_bytes(model.state_dict(), {}))


def test_pack_and_unpack_training_state_resumes_exactly():
    import torch

    from ml.checkpoints import (
        pack_training_state,
        state_from_bytes,
        state_to_bytes,
        unpack_training_state,
    )

    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))

    def step(model, opt):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    step(model, opt)
    tensors, meta = pack_training_state(model.state_dict(), opt.state_dict())
    assert set(meta) == {"optimizer"} and all(k.startswith(("model.", "optim.")) for k in tensors)
    tensors, _ = state_from_bytes(state_to_bytes(tensors))  # through safetensors, as on disk

    resumed = torch.nn.Linear(4, 3)
    resumed_opt = torch.optim.Adam(resumed.parameters(), lr=0.1)
    model_state, optim_state = unpack_training_state(tensors, meta)
    resumed.load_state_dict(model_state)
    resumed_opt.load_state_dict(optim_state)
    step(model, opt)
    step(resumed, resumed_opt)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
