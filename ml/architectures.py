"""The studio's named architectures, built from torch layers: Orchard's small ones (``mlp``,
``cnn_small``, ``lenet``, ``resnet_tiny``) and the training-studio plan's classification catalog
(``resnet18``, ``resnet34``, ``resnet50``, ``efficientnet_b0``, ``efficientnet_b3``,
``mobilenet_v3_small``, ``mobilenet_v3_large``), with the published stage layouts and randomly
initialised (no weights are downloaded). :func:`build_architecture` builds one for a per-sample
input shape (without the batch dimension) and a number of classes. Image architectures take
``(C, H, W)`` or ``(H, W)`` (one channel) shapes with H, W >= 8, and accept flat
``(batch, C*H*W)`` inputs too.

An architecture name may carry build options after ``@``: ``resnet18@dropout=0.2`` puts a dropout
layer before the classifier (:func:`architecture_source` writes such names). The name is what a
cluster stores, so a checkpoint rebuilds the same module. Template networks are in
:mod:`ml.networks`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ml.networks import seeded

__all__ = [
    "ARCHITECTURES",
    "ArchitectureError",
    "ArchitectureSpec",
    "architecture_names",
    "architecture_source",
    "build_architecture",
    "freeze_backbone",
    "parse_architecture_source",
]

MIN_IMAGE_SIDE = 8


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
    """Names accepted by :func:`build_architecture` (without options), sorted."""
    return sorted(ARCHITECTURES)


def architecture_source(name: str, *, dropout: float = 0.0) -> str:
    """The name (with its build options) that :func:`build_architecture` takes."""
    if dropout:
        return f"{name}@dropout={round(float(dropout), 3):g}"
    return name


def parse_architecture_source(source: str) -> tuple[str, dict[str, float]]:
    """(architecture name, build options) of a name written by :func:`architecture_source`."""
    name, _, rest = str(source).partition("@")
    options: dict[str, float] = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        if key != "dropout":
            raise ArchitectureError(f"unknown architecture option '{key}' in '{source}'")
        try:
            options["dropout"] = float(value)
        except ValueError:
            raise ArchitectureError(f"dropout must be a number in '{source}'") from None
        if not 0.0 <= options["dropout"] < 1.0:
            raise ArchitectureError(f"dropout must be in [0, 1) in '{source}'")
    return name, options


def build_architecture(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, seed: int | None = None
) -> nn.Module:
    """Build a named architecture for per-sample ``input_shape`` (no batch dim) and classes.

    Raises :class:`ArchitectureError` for an unknown name or a shape the architecture cannot use.
    """
    name, options = parse_architecture_source(name)
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
    with seeded(seed):
        model = spec.builder(shape, int(num_classes))
        dropout = options.get("dropout", 0.0)
        if dropout:
            model = _with_dropout(model, dropout)
        return model


def freeze_backbone(model: nn.Module) -> None:
    """Stop training everything but the classifier head (the last linear layer and, for the
    catalog's networks, their ``head``/``pre_head``)."""
    head_modules = [getattr(model, "head", None), getattr(model, "pre_head", None)]
    if isinstance(model, nn.Sequential):
        linears = [m for m in model if isinstance(m, nn.Linear)]
        head_modules.append(linears[-1] if linears else None)
    keep = {id(p) for m in head_modules if m is not None for p in m.parameters()}
    for parameter in model.parameters():
        if id(parameter) not in keep:
            parameter.requires_grad_(False)


def _with_dropout(model: nn.Module, p: float) -> nn.Module:
    """Put ``Dropout(p)`` before the model's final linear layer (the classifier head)."""
    if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear):
        return nn.Sequential(*list(model)[:-1], nn.Dropout(p), model[-1])
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        model.head = nn.Sequential(nn.Dropout(p), head)
        return model
    raise ArchitectureError("this architecture takes no dropout option")


# --- the plan's classification catalog, from torch layers ---------------------------------------


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act=nn.ReLU):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class _Bottleneck(nn.Module):
    """A ResNet bottleneck block (1x1 reduce, 3x3, 1x1 expand x4) with a projection shortcut."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            _conv_bn(cin, width, 1),
            _conv_bn(width, width, 3, stride),
            _conv_bn(width, cout, 1, act=None),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = _conv_bn(cin, cout, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class _Classifier(nn.Module):
    """Reshape -> feature extractor -> global average pool -> ``head`` (a linear layer)."""

    def __init__(self, shape: tuple[int, int, int], features: nn.Module, width: int, classes: int):
        super().__init__()
        self.reshape = _Reshape(shape)
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head: nn.Module = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(self.pool(self.features(self.reshape(x))), 1))


def _resnet(name: str, blocks: tuple[int, ...], bottleneck: bool):
    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        shape = _image_shape(name, input_shape)
        layers: list[nn.Module] = [
            nn.Conv2d(shape[0], 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]
        cin = 64
        for stage, count in enumerate(blocks):
            width = 64 * 2**stage
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                if bottleneck:
                    layers.append(_Bottleneck(cin, width, stride))
                    cin = width * _Bottleneck.expansion
                else:
                    layers.append(_BasicBlock(cin, width, stride))
                    cin = width
        return _Classifier(shape, nn.Sequential(*layers), cin, num_classes)

    return build


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, gate=nn.Sigmoid) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.act = nn.ReLU(inplace=True) if gate is nn.Hardsigmoid else nn.SiLU(inplace=True)
        self.gate = gate()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class _InvertedResidual(nn.Module):
    """MobileNetV3 / EfficientNet block: 1x1 expand, depthwise k x k, squeeze-excite, 1x1 project."""

    def __init__(self, cin, expanded, cout, k, stride, se, act, se_gate, se_divisor) -> None:  # noqa: PLR0913
        super().__init__()
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(_conv_bn(cin, expanded, 1, act=act))
        layers.append(_conv_bn(expanded, expanded, k, stride, groups=expanded, act=act))
        if se:
            layers.append(_SqueezeExcite(expanded, max(8, expanded // se_divisor), se_gate))
        layers.append(_conv_bn(expanded, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return out + x if self.residual else out


# (kernel, expanded, out, squeeze-excite, hard-swish, stride) per block (Howard et al. 2019).
_MOBILENET_V3 = {
    "mobilenet_v3_small": (
        16,
        [
            (3, 16, 16, True, False, 2),
            (3, 72, 24, False, False, 2),
            (3, 88, 24, False, False, 1),
            (5, 96, 40, True, True, 2),
            (5, 240, 40, True, True, 1),
            (5, 240, 40, True, True, 1),
            (5, 120, 48, True, True, 1),
            (5, 144, 48, True, True, 1),
            (5, 288, 96, True, True, 2),
            (5, 576, 96, True, True, 1),
            (5, 576, 96, True, True, 1),
        ],
        576,
        1024,
    ),
    "mobilenet_v3_large": (
        16,
        [
            (3, 16, 16, False, False, 1),
            (3, 64, 24, False, False, 2),
            (3, 72, 24, False, False, 1),
            (5, 72, 40, True, False, 2),
            (5, 120, 40, True, False, 1),
            (5, 120, 40, True, False, 1),
            (3, 240, 80, False, True, 2),
            (3, 200, 80, False, True, 1),
            (3, 184, 80, False, True, 1),
            (3, 184, 80, False, True, 1),
            (3, 480, 112, True, True, 1),
            (3, 672, 112, True, True, 1),
            (5, 672, 160, True, True, 2),
            (5, 960, 160, True, True, 1),
            (5, 960, 160, True, True, 1),
        ],
        960,
        1280,
    ),
}


class _MobileNetV3(_Classifier):
    def __init__(self, name: str, shape: tuple[int, int, int], classes: int) -> None:
        stem, blocks, last, hidden = _MOBILENET_V3[name]
        layers: list[nn.Module] = [_conv_bn(shape[0], stem, 3, 2, act=nn.Hardswish)]
        cin = stem
        for k, expanded, cout, se, hs, stride in blocks:
            act = nn.Hardswish if hs else nn.ReLU
            layers.append(
                _InvertedResidual(cin, expanded, cout, k, stride, se, act, nn.Hardsigmoid, 4)
            )
            cin = cout
        layers.append(_conv_bn(cin, last, 1, act=nn.Hardswish))
        super().__init__(shape, nn.Sequential(*layers), hidden, classes)
        self.pre_head = nn.Sequential(nn.Linear(last, hidden), nn.Hardswish(inplace=True))
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        features = torch.flatten(self.pool(self.features(self.reshape(x))), 1)
        return self.head(self.pre_head(features))


# EfficientNet-B0 stages: (expand ratio, kernel, stride, out channels, repeats) (Tan & Le 2019).
_EFFICIENTNET_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
_EFFICIENTNET_SCALES = {"efficientnet_b0": (1.0, 1.0), "efficientnet_b3": (1.2, 1.4)}


def _round_channels(channels: float, divisor: int = 8) -> int:
    value = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return value + divisor if value < 0.9 * channels else value


def _efficientnet(name: str):
    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        shape = _image_shape(name, input_shape)
        width, depth = _EFFICIENTNET_SCALES[name]
        stem = _round_channels(32 * width)
        layers: list[nn.Module] = [_conv_bn(shape[0], stem, 3, 2, act=nn.SiLU)]
        cin = stem
        for expand, k, stride, cout, repeats in _EFFICIENTNET_STAGES:
            cout = _round_channels(cout * width)
            for i in range(int(math.ceil(repeats * depth))):
                block = _InvertedResidual(
                    cin,
                    cin * expand,
                    cout,
                    k,
                    stride if i == 0 else 1,
                    True,
                    nn.SiLU,
                    nn.Sigmoid,
                    4 * expand,
                )
                layers.append(block)
                cin = cout
        last = _round_channels(1280 * width)
        layers.append(_conv_bn(cin, last, 1, act=nn.SiLU))
        return _Classifier(shape, nn.Sequential(*layers), last, num_classes)

    return build


def _mobilenet(name: str):
    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return _MobileNetV3(name, _image_shape(name, input_shape), num_classes)

    return build


for _spec in (
    ArchitectureSpec(
        "resnet18",
        "ResNet-18 (basic blocks 2-2-2-2)",
        True,
        _resnet("resnet18", (2, 2, 2, 2), False),
    ),
    ArchitectureSpec(
        "resnet34",
        "ResNet-34 (basic blocks 3-4-6-3)",
        True,
        _resnet("resnet34", (3, 4, 6, 3), False),
    ),
    ArchitectureSpec(
        "resnet50", "ResNet-50 (bottlenecks 3-4-6-3)", True, _resnet("resnet50", (3, 4, 6, 3), True)
    ),
    ArchitectureSpec(
        "efficientnet_b0",
        "EfficientNet-B0 (MBConv + squeeze-excite)",
        True,
        _efficientnet("efficientnet_b0"),
    ),
    ArchitectureSpec(
        "efficientnet_b3",
        "EfficientNet-B3 (width 1.2, depth 1.4)",
        True,
        _efficientnet("efficientnet_b3"),
    ),
    ArchitectureSpec(
        "mobilenet_v3_small", "MobileNetV3-Small", True, _mobilenet("mobilenet_v3_small")
    ),
    ArchitectureSpec(
        "mobilenet_v3_large", "MobileNetV3-Large", True, _mobilenet("mobilenet_v3_large")
    ),
):
    ARCHITECTURES[_spec.name] = _spec
