"""Torch networks: built from cluster templates, or from a named architecture.

:class:`TemplateNetwork` turns a :class:`ml.templates.Template` into a feed-forward network: every
non-input brick on an input -> output path computes
``activation(sum(Linear(src) for src in predecessors))``; hidden bricks use ReLU, output bricks
are linear (they return logits). Only the first projection into a brick carries a bias, so a brick
with several predecessors has one bias, not several redundant ones.

``ARCHITECTURES`` holds the studio's named architectures (``mlp``, ``cnn_small``, ``lenet``,
``resnet_tiny``); :func:`build_architecture` builds one for a per-sample input shape (without the
batch dimension) and a number of classes. Image architectures take ``(C, H, W)`` or ``(H, W)``
(one channel) shapes with H, W >= 8, and accept flat ``(batch, C*H*W)`` inputs too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ml.templates import Template

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "ArchitectureError",
    "ArchitectureSpec",
    "TemplateNetwork",
    "architecture_names",
    "build_architecture",
    "build_network",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}
MIN_IMAGE_SIDE = 8


class TemplateNetwork(nn.Module):
    """A feed-forward network whose layers are the bricks of a cluster template.

    ``forward`` takes ``(batch, size)`` tensors (extra trailing dimensions are flattened). With a
    single input brick a plain tensor may be passed; the result is a plain tensor when the input
    was a plain tensor and there is a single output brick, otherwise a dict keyed by output brick
    name. A dict input is keyed by input brick name.
    """

    def __init__(self, template: Template, *, activation: str = "relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}' (known: {', '.join(ACTIVATIONS)})")
        self.template = template
        bricks = template.bricks
        self.input_names: list[str] = list(template.inputs)
        self.output_names: list[str] = list(template.outputs)
        self.input_sizes: dict[str, int] = dict(template.inputs)
        self.output_sizes: dict[str, int] = dict(template.outputs)
        self._input_indices = [template.brick_index(n) for n in self.input_names]
        self._output_indices = [template.brick_index(n) for n in self.output_names]
        self.activation = ACTIVATIONS[activation]()
        self.projections = nn.ModuleDict()

        incoming: dict[int, list[int]] = {}
        for src, dst in template.live_edges:
            incoming.setdefault(dst, []).append(src)
        # Edges go from x to x + 1, so sorting by x is a topological order.
        order = sorted(incoming, key=lambda i: (bricks[i].position[0], i))
        self._plan: list[tuple[int, list[tuple[int, nn.Linear]], bool]] = []
        for dst in order:
            sources = []
            for k, src in enumerate(incoming[dst]):
                layer = nn.Linear(
                    bricks[src].number_of_neurons, bricks[dst].number_of_neurons, bias=k == 0
                )
                self.projections[f"{src}_{dst}"] = layer
                sources.append((src, layer))
            self._plan.append((dst, sources, bricks[dst].kind == "hidden"))

    def forward(self, x: Tensor | Mapping[str, Tensor]) -> Tensor | dict[str, Tensor]:
        """Run the network; see the class docstring for the accepted and returned shapes."""
        values: dict[int, Tensor] = {}
        if isinstance(x, Tensor):
            if len(self._input_indices) != 1:
                raise ValueError(
                    f"this network has {len(self.input_names)} input bricks "
                    f"({', '.join(self.input_names)}): pass a dict keyed by brick name"
                )
            values[self._input_indices[0]] = self._check_input(self.input_names[0], x)
        else:
            missing = [name for name in self.input_names if name not in x]
            if missing:
                raise ValueError(f"missing input brick(s): {', '.join(missing)}")
            for name, index in zip(self.input_names, self._input_indices, strict=True):
                values[index] = self._check_input(name, x[name])

        for dst, sources, hidden in self._plan:
            total = None
            for src, layer in sources:
                projected = layer(values[src])
                total = projected if total is None else total + projected
            values[dst] = self.activation(total) if hidden else total

        if isinstance(x, Tensor) and len(self._output_indices) == 1:
            return values[self._output_indices[0]]
        return {
            name: values[index]
            for name, index in zip(self.output_names, self._output_indices, strict=True)
        }

    def _check_input(self, name: str, x: Tensor) -> Tensor:
        if x.dim() > 2:
            x = x.flatten(1)
        size = self.input_sizes[name]
        if x.dim() != 2 or x.shape[1] != size:
            raise ValueError(
                f"input brick '{name}' expects (batch, {size}) values, got {tuple(x.shape)}"
            )
        return x


def build_network(
    template: Template, *, seed: int | None = None, activation: str = "relu"
) -> TemplateNetwork:
    """Build the torch network of a template; ``seed`` makes the initial weights reproducible."""
    with _seeded(seed):
        return TemplateNetwork(template, activation=activation)


# --- named architectures ------------------------------------------------------------------------


class ArchitectureError(ValueError):
    """An unknown architecture, or one that cannot work with the given input shape."""


@dataclass(frozen=True)
class ArchitectureSpec:
    """A named architecture of the studio: what it is and how to build it."""

    name: str
    description: str
    needs_image: bool
    builder: Callable[[tuple[int, ...], int], nn.Module]


class _Reshape(nn.Module):
    """Reshape ``(batch, ...)`` to ``(batch, *shape)``: lets image models take flat rows too."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)


class _BasicBlock(nn.Module):
    """A ResNet basic block: two 3x3 convs with batch norm and an identity/projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) == 2:
        input_shape = (1, *input_shape)
    if len(input_shape) != 3:
        raise ArchitectureError(
            f"architecture '{name}' needs an image input shape (C, H, W) or (H, W), "
            f"got {input_shape}"
        )
    channels, height, width = input_shape
    if height < MIN_IMAGE_SIDE or width < MIN_IMAGE_SIDE:
        raise ArchitectureError(
            f"architecture '{name}' needs images of at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}, "
            f"got {height}x{width}"
        )
    return channels, height, width


def _build_mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 256) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _build_cnn_small(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels, height, width = _image_shape("cnn_small", input_shape)
    return nn.Sequential(
        _Reshape((channels, height, width)),
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (height // 2) * (width // 2), num_classes),
    )


def _build_lenet(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels, height, width = _image_shape("lenet", input_shape)
    # Classic LeNet-5 on 28x28 (conv5 pad 2, pool, conv5, pool -> 16x5x5). Small images keep
    # their size through the second conv (padding 2) so 8x8 works; big ones are pooled to 5x5.
    small = min(height, width) // 2 < 10
    pad2 = 2 if small else 0
    h2 = (height // 2 + 2 * pad2 - 4) // 2
    w2 = (width // 2 + 2 * pad2 - 4) // 2
    layers: list[nn.Module] = [
        _Reshape((channels, height, width)),
        nn.Conv2d(channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=pad2),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]
    if h2 > 5 or w2 > 5:
        h2, w2 = min(h2, 5), min(w2, 5)
        layers.append(nn.AdaptiveAvgPool2d((h2, w2)))
    layers += [
        nn.Flatten(),
        nn.Linear(16 * h2 * w2, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    ]
    return nn.Sequential(*layers)


def _build_resnet_tiny(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels, height, width = _image_shape("resnet_tiny", input_shape)
    return nn.Sequential(
        _Reshape((channels, height, width)),
        nn.Conv2d(channels, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        _BasicBlock(16, 16, 1),
        _BasicBlock(16, 32, 2),
        _BasicBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    spec.name: spec
    for spec in (
        ArchitectureSpec(
            "mlp", "flatten -> 256 ReLU -> classes; any input shape", False, _build_mlp
        ),
        ArchitectureSpec(
            "cnn_small",
            "two 3x3 convs (32, 64) -> 2x2 max pool -> linear; images >= 8x8",
            True,
            _build_cnn_small,
        ),
        ArchitectureSpec(
            "lenet",
            "LeNet-5 (conv 6, conv 16, fc 120, fc 84); images >= 8x8",
            True,
            _build_lenet,
        ),
        ArchitectureSpec(
            "resnet_tiny",
            "3x3 stem + three residual blocks (16, 32, 64) + global pool; images >= 8x8",
            True,
            _build_resnet_tiny,
        ),
    )
}


def architecture_names() -> list[str]:
    """Names accepted by :func:`build_architecture`, sorted."""
    return sorted(ARCHITECTURES)


def build_architecture(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, seed: int | None = None
) -> nn.Module:
    """Build a named architecture for per-sample ``input_shape`` (no batch dim) and classes.

    Raises :class:`ArchitectureError` for an unknown name or a shape the architecture cannot use.
    """
    spec = ARCHITECTURES.get(name)
    if spec is None:
        raise ArchitectureError(
            f"unknown architecture '{name}' (known: {', '.join(architecture_names())})"
        )
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d <= 0 for d in shape):
        raise ArchitectureError(f"input_shape must be non-empty positive sizes, got {shape}")
    if num_classes < 1:
        raise ArchitectureError(f"num_classes must be at least 1, got {num_classes}")
    with _seeded(seed):
        return spec.builder(shape, int(num_classes))


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's CPU RNG inside the block only (its state is restored after); None: no-op."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield
