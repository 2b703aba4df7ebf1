"""Networks built from templates, and the named architectures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ml.architectures import (
    ARCHITECTURES,
    ArchitectureError,
    architecture_names,
    build_architecture,
)
from ml.networks import TemplateNetwork, build_network
from ml.templates import parse_template
from tests.ml.samples import MULTI_TEMPLATE, SEED_TEMPLATE


def test_seed_template_network_is_784_400_10() -> None:
    net = build_network(parse_template(SEED_TEMPLATE), seed=0)
    assert isinstance(net, TemplateNetwork)
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(784, 400), (400, 10)]
    assert net.input_names == ["test_input"]
    assert net.output_names == ["test_output"]
    assert net.input_sizes == {"test_input": 784}
    assert net.output_sizes == {"test_output": 10}
    out = net(torch.rand(5, 784))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (5, 10)
    # 28x28 images are flattened; a dict input gives a dict output.
    assert net(torch.rand(2, 28, 28)).shape == (2, 10)
    assert net({"test_input": torch.rand(3, 784)})["test_output"].shape == (3, 10)


def test_seed_makes_weights_reproducible_without_touching_global_rng() -> None:
    template = parse_template(SEED_TEMPLATE)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_network(template, seed=7)
    after = torch.rand(1)
    b = build_network(template, seed=7)
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_multi_input_output_network() -> None:
    net = build_network(parse_template(MULTI_TEMPLATE), seed=0)
    out = net({"a": torch.rand(6, 4), "b": torch.rand(6, 3)})
    assert set(out) == {"y", "z"}
    assert out["y"].shape == (6, 2)
    assert out["z"].shape == (6, 5)
    # The hidden brick sums two projections with a single bias.
    biases = [name for name, _ in net.named_parameters() if name.endswith("bias")]
    assert len(biases) == 3
    out["y"].sum().backward()
    with pytest.raises(ValueError, match="2 input bricks"):
        net(torch.rand(6, 4))
    with pytest.raises(ValueError, match="missing input brick"):
        net({"a": torch.rand(6, 4)})
    with pytest.raises(ValueError, match="expects \\(batch, 3\\)"):
        net({"a": torch.rand(6, 4), "b": torch.rand(6, 4)})


def test_gelu_activation_and_unknown_activation() -> None:
    template = parse_template(SEED_TEMPLATE)
    assert isinstance(build_network(template, activation="gelu").activation, nn.GELU)
    with pytest.raises(ValueError, match="unknown activation"):
        build_network(template, activation="tanh")


@pytest.mark.parametrize("name", ["mlp", "cnn_small", "lenet", "resnet_tiny"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_architectures_on_small_and_mnist_images(name: str, shape: tuple[int, ...]) -> None:
    model = build_architecture(name, input_shape=shape, num_classes=10, seed=0)
    model.eval()
    with torch.inference_mode():
        assert model(torch.rand(3, *shape)).shape == (3, 10)
        flat = torch.rand(3, shape[0] * shape[1] * shape[2])
        assert model(flat).shape == (3, 10)


def test_registry() -> None:
    assert architecture_names() == [
        "cnn_small",
        "efficientnet_b0",
        "efficientnet_b3",
        "lenet",
        "mlp",
        "mobilenet_v3_large",
        "mobilenet_v3_small",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet_tiny",
    ]
    assert set(ARCHITECTURES) == set(architecture_names())
    assert all(spec.description for spec in ARCHITECTURES.values())
    assert build_architecture("mlp", input_shape=(64,), num_classes=3)(torch.rand(2, 64)).shape == (
        2,
        3,
    )


@pytest.mark.parametrize(
    ("name", "shape", "fragment"),
    [
        ("cnn_small", (64,), "needs an image input shape"),
        ("lenet", (2, 3, 4, 5), "needs an image input shape"),
        ("resnet_tiny", (1, 4, 4), "at least 8x8"),
        ("mlp", (), "non-empty"),
        ("mlp", (0, 3), "positive"),
        ("vgg", (1, 8, 8), "unknown architecture 'vgg'"),
    ],
)
def test_architecture_errors(name: str, shape: tuple[int, ...], fragment: str) -> None:
    with pytest.raises(ArchitectureError, match=fragment):
        build_architecture(name, input_shape=shape, num_classes=10)
