"""Image augmentation on whole batches of device tensors (no per-sample Python, no PIL).

:class:`AugmentConfig` holds the options; :func:`make_augment` turns them into a callable
``augment(batch) -> batch`` for :func:`ml.training.fit`. Geometric changes (flips, shifts,
rotations, zoom) are one ``affine_grid`` + ``grid_sample`` per batch with a random affine matrix per
sample; photometric ones (brightness, contrast, noise) are element-wise. Random numbers come from
torch's global generators, which ``fit`` seeds per epoch, so a seeded run stays reproducible.

Batches may be flat ``(B, C*H*W)`` or ``(B, C, H, W)``; the result has the input's shape. Pixels
that move in from outside the image are 0 (the background of digits and most scans).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AUGMENT_LIMITS", "AugmentConfig", "Augmenter", "make_augment"]

# Upper bound of every numeric option (lower bound 0).
AUGMENT_LIMITS: dict[str, float] = {
    "shift": 0.5,  # largest translation, as a fraction of the image side
    "rotate": 180.0,  # largest rotation in degrees, either way
    "scale": 0.5,  # largest zoom in or out, as a fraction
    "brightness": 1.0,  # largest added offset, either way
    "contrast": 1.0,  # largest contrast factor change, either way
    "noise": 1.0,  # standard deviation of added Gaussian noise
}


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation options; all off by default. Invalid values raise ValueError on creation."""

    hflip: bool = False
    vflip: bool = False
    shift: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")
        for name, limit in AUGMENT_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number between 0 and {limit:g}")
            if not 0 <= value <= limit:
                raise ValueError(f"{name} must be between 0 and {limit:g}, got {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AugmentConfig:
        """Build from a JSON mapping; unknown keys raise ValueError naming them."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown augmentation option(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def geometric(self) -> bool:
        return self.hflip or self.vflip or bool(self.shift or self.rotate or self.scale)

    @property
    def enabled(self) -> bool:
        return self.geometric or bool(self.brightness or self.contrast or self.noise)


class Augmenter:
    """Applies an :class:`AugmentConfig` to batches of images of one shape ``(C, H, W)``."""

    def __init__(self, config: AugmentConfig, image_shape: tuple[int, int, int]) -> None:
        if len(image_shape) != 3 or any(int(v) < 1 for v in image_shape):
            raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
        self.config = config
        self.image_shape = tuple(int(v) for v in image_shape)

    def __call__(self, batch: Tensor) -> Tensor:
        shape = batch.shape
        images = batch.reshape(shape[0], *self.image_shape)
        if self.config.geometric:
            images = self._geometric(images)
        images = self._photometric(images)
        return images.reshape(shape)

    def _uniform(self, n: int, like: Tensor) -> Tensor:
        """n values uniform in [-1, 1) on the batch's device."""
        return torch.rand(n, device=like.device, dtype=like.dtype) * 2 - 1

    def _geometric(self, images: Tensor) -> Tensor:
        c = self.config
        n = images.shape[0]
        angle = self._uniform(n, images) * math.radians(c.rotate)
        zoom = 1 + self._uniform(n, images) * c.scale
        ones = torch.ones(n, device=images.device, dtype=images.dtype)
        flip_x = torch.where(torch.rand_like(ones) < 0.5, -ones, ones) if c.hflip else ones
        flip_y = torch.where(torch.rand_like(ones) < 0.5, -ones, ones) if c.vflip else ones
        # Normalised coordinates span [-1, 1]: a shift of f of the side is 2f.
        tx = self._uniform(n, images) * (2 * c.shift)
        ty = self._uniform(n, images) * (2 * c.shift)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            (
                torch.stack((cos * flip_x, -sin * flip_y, tx), dim=1),
                torch.stack((sin * flip_x, cos * flip_y, ty), dim=1),
            ),
            dim=1,
        )
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )

    def _photometric(self, images: Tensor) -> Tensor:
        c = self.config
        n = images.shape[0]
        if c.contrast:
            factor = (1 + self._uniform(n, images) * c.contrast).view(n, 1, 1, 1)
            mean = images.mean(dim=(1, 2, 3), keepdim=True)
            images = (images - mean) * factor + mean
        if c.brightness:
            images = images + (self._uniform(n, images) * c.brightness).view(n, 1, 1, 1)
        if c.noise:
            images = images + torch.randn_like(images) * c.noise
        return images


def make_augment(
    config: AugmentConfig | Mapping[str, Any] | None, image_shape: tuple[int, ...]
) -> Callable[[Tensor], Tensor] | None:
    """The batch augmentation for ``config`` on images of ``image_shape``; None when it is off.

    ``image_shape`` is ``(C, H, W)`` or ``(H, W)`` (one channel). A config that is on for a shape
    that is not an image raises ValueError.
    """
    if not isinstance(config, AugmentConfig):
        config = AugmentConfig.from_dict(config)
    if not config.enabled:
        return None
    shape = tuple(int(v) for v in image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ValueError(f"augmentation needs an image input size (C, H, W) or (H, W), got {shape}")
    return Augmenter(config, shape)


# --- the training-studio plan's augmentation pipelines ------------------------------------------

# Transforms of the plan (torchvision.transforms.v2 names) that Orchard applies, on the device.
PLAN_TRANSFORMS = (
    "Resize",
    "CenterCrop",
    "RandomResizedCrop",
    "RandomHorizontalFlip",
    "RandomVerticalFlip",
    "RandomRotation",
    "RandomAffine",
    "ColorJitter",
    "ToTensor",
    "Normalize",
)


@dataclass(frozen=True)
class PlanPipeline:
    """What a plan pipeline (``[{"name", "params"}, ...]``) means for Orchard's training: the
    image size the network sees (``size`` as (H, W), from the last Resize / CenterCrop /
    RandomResizedCrop, None: the data's own), the random augmentation (an :class:`AugmentConfig`)
    and the normalisation ``(x - mean) / std`` applied after pixels are scaled to 0..1."""

    size: tuple[int, int] | None
    augment: AugmentConfig
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


def _plan_size(name: str, params: Mapping[str, Any]) -> tuple[int, int]:
    size = params.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4096 for v in size)
    ):
        raise ValueError(f"{name}: size must be [H, W] (1..4096), got {size!r}")
    return int(size[0]), int(size[1])


def _plan_number(name: str, params: Mapping[str, Any], key: str, default: float, top: float):
    value = params.get(key, default)
    if isinstance(value, list | tuple) and len(value) == 2:
        value = (
            max(abs(float(v)) for v in value)
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            else value
        )
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= top:
        raise ValueError(f"{name}: {key} must be a number between 0 and {top:g}, got {value!r}")
    return float(value)


def _plan_probability(name: str, params: Mapping[str, Any]) -> bool:
    p = _plan_number(name, params, "p", 0.5, 1.0)
    return p > 0


def parse_plan_pipeline(steps: Any, *, channels: int, train: bool) -> PlanPipeline:
    """Read one plan pipeline; ValueError naming the step that Orchard cannot apply.

    Flips are applied with probability 0.5 whatever ``p`` (> 0) says; rotations, affine shifts and
    zooms, brightness and contrast are drawn uniformly up to the given bounds per sample. In a
    validation pipeline (``train=False``) random steps are refused: validation is deterministic.
    """
    if not isinstance(steps, list):
        raise ValueError("must be a list of {name, params} steps")
    size: tuple[int, int] | None = None
    mean = std = None
    options: dict[str, Any] = {}
    for i, step in enumerate(steps):
        name, params = _plan_step(i, step, train=train)
        if name in ("Resize", "CenterCrop"):
            size = _plan_size(name, params)
        elif name == "RandomResizedCrop":
            size = _plan_size(name, params)
            options["scale"] = _plan_crop_scale(name, params)
        elif name == "RandomHorizontalFlip":
            options["hflip"] = _plan_probability(name, params)
        elif name == "RandomVerticalFlip":
            options["vflip"] = _plan_probability(name, params)
        elif name == "RandomRotation":
            options["rotate"] = _plan_number(name, params, "degrees", 0.0, 180.0)
        elif name == "RandomAffine":
            _plan_affine(name, params, options)
        elif name == "ColorJitter":
            _plan_color_jitter(name, params, options)
        elif name == "Normalize":
            mean, std = _plan_normalize(name, params, channels)
        # ToTensor: pixels are always scaled to 0..1 before anything else.
    return PlanPipeline(size=size, augment=AugmentConfig(**options), mean=mean, std=std)


def _plan_step(i: int, step: Any, *, train: bool) -> tuple[str, Mapping[str, Any]]:
    """The name and params of step ``i``: a known transform, not random in a val pipeline."""
    if not isinstance(step, Mapping) or not isinstance(step.get("name"), str):
        raise ValueError(f"step {i}: must be an object with a name and params")
    unknown = sorted(set(step) - {"name", "params"})
    if unknown:
        raise ValueError(f"step {i}: unknown key(s) {', '.join(unknown)}")
    name, params = step["name"], step.get("params") or {}
    if not isinstance(params, Mapping):
        raise ValueError(f"{name}: params must be an object")
    if name not in PLAN_TRANSFORMS:
        raise ValueError(f"{name} is not supported (supported: {', '.join(PLAN_TRANSFORMS)})")
    if not train and name.startswith(("Random", "ColorJitter")):
        raise ValueError(f"{name} is random; a val pipeline must be deterministic")
    return name, params


def _plan_crop_scale(name: str, params: Mapping[str, Any]) -> float:
    """RandomResizedCrop's area range as Orchard's zoom bound."""
    scale = params.get("scale", [0.08, 1.0])
    if (
        not isinstance(scale, list | tuple)
        or len(scale) != 2
        or not all(isinstance(v, int | float) and 0 < v <= 1 for v in scale)
    ):
        raise ValueError(f"{name}: scale must be [low, high] in (0, 1], got {scale!r}")
    return min(AUGMENT_LIMITS["scale"], 1.0 - math.sqrt(min(scale)))


def _plan_affine(name: str, params: Mapping[str, Any], options: dict[str, Any]) -> None:
    """RandomAffine's rotation, shift and zoom bounds, set in ``options``."""
    options["rotate"] = _plan_number(name, params, "degrees", 0.0, 180.0)
    translate = params.get("translate") or [0.0, 0.0]
    if not isinstance(translate, list | tuple) or not all(
        isinstance(v, int | float) and 0 <= v <= 0.5 for v in translate
    ):
        raise ValueError(f"{name}: translate must be [dx, dy] in 0..0.5")
    options["shift"] = float(max(translate)) if translate else 0.0
    zoom = params.get("scale")
    if zoom is not None:
        if not isinstance(zoom, list | tuple) or not all(
            isinstance(v, int | float) and 0.5 <= v <= 1.5 for v in zoom
        ):
            raise ValueError(f"{name}: scale must be [low, high] in 0.5..1.5")
        options["scale"] = float(max(abs(1.0 - v) for v in zoom))


def _plan_color_jitter(name: str, params: Mapping[str, Any], options: dict[str, Any]) -> None:
    """ColorJitter's brightness and contrast bounds, set in ``options``."""
    unknown = sorted(set(params) - {"brightness", "contrast", "saturation", "hue"})
    if unknown:
        raise ValueError(f"{name}: unknown param(s) {', '.join(unknown)}")
    options["brightness"] = _plan_number(name, params, "brightness", 0.0, 1.0)
    options["contrast"] = _plan_number(name, params, "contrast", 0.0, 1.0)
    # saturation / hue are accepted and not applied (Orchard's jitter is per image).


def _plan_normalize(
    name: str, params: Mapping[str, Any], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalize's mean and std, one per channel (a single value is repeated)."""
    mean, std = params.get("mean"), params.get("std")
    for key, value in (("mean", mean), ("std", std)):
        if (
            not isinstance(value, list | tuple)
            or len(value) not in (1, channels)
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError(
                f"{name}: {key} must be a list of 1 or {channels} numbers, got {value!r}"
            )
    assert mean is not None and std is not None  # checked just above
    if any(v <= 0 for v in std):
        raise ValueError(f"{name}: std must be positive")
    mean = tuple(float(v) for v in mean) * (channels if len(mean) == 1 else 1)
    std = tuple(float(v) for v in std) * (channels if len(std) == 1 else 1)
    return mean, std
