"""Label propagation through a 3D volume by learned slice-to-slice registration (pure torch).

A user annotates a few slices of a volume along one axis; the labels are carried to every other
slice by registering neighbouring slices and following the deformations:

- :class:`RegistrationNet`, a small 2D U-Net, takes a pair of slices (moving, fixed) and predicts
  a dense displacement field; :func:`warp` applies it with ``torch.nn.functional.grid_sample``.
- :func:`train_registration` fits it on a volume's neighbouring slice pairs (both directions)
  without labels: a local normalised cross-correlation between the warped moving slice and the
  fixed one, plus a smoothness penalty on the field's gradients (Adam, clipped gradients; the
  epoch with the lowest loss is kept, so a late divergence is not). A checkpoint
  (:func:`checkpoint_to_bytes`, safetensors) is fully convolutional, so it can be reused on other
  volumes and slice sizes, as a start for further training or directly for propagation.
- :func:`propagate` composes the fields slice after slice from each annotated slice upwards
  (``Y_up``, increasing index along the axis) and downwards (``Y_down``), warps the annotation's
  one-hot map once through the composed field (no accumulated re-sampling of labels), and fuses
  both directions (``Y_fused``) by distance weighting: the nearer annotated slice weighs more. With
  ``criteria="ncc"`` the weights are further scaled by how well each direction's warped image
  matches the target slice (``reduction``: per pixel, locally averaged, or per slice).

:func:`make_volume` generates test volumes with known labels (ellipses drifting and growing from
slice to slice, noisy images) and :func:`nearest_slice_labels` the naive baseline (copy the
nearest annotated slice) that :func:`dice` compares against.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "CRITERIA",
    "REDUCTIONS",
    "LabelPropConfig",
    "LabelPropError",
    "Propagation",
    "RegistrationNet",
    "TrainResult",
    "annotated_slices",
    "build_net",
    "checkpoint_from_bytes",
    "checkpoint_to_bytes",
    "dice",
    "make_volume",
    "nearest_slice_labels",
    "normalise_intensities",
    "propagate",
    "registration_loss",
    "sparse_annotation",
    "train_registration",
    "warp",
    "working_size",
]

CHECKPOINT_FORMAT = "orchard.labelprop.v1"
CRITERIA = ("distance", "ncc")
REDUCTIONS = ("none", "local_mean", "mean")
_META_KEY = "orchard.labelprop"
# Slices are resized to a square of this many pixels at most / at least (a multiple of 8).
MIN_SIZE, MAX_SIZE = 16, 512
# Largest displacement between neighbouring slices, in grid_sample units (2 = the whole slice).
MAX_DISPLACEMENT = 0.25


class LabelPropError(ValueError):
    """Input the method cannot use (no annotated slice, shapes that do not match, ...)."""


# --- configuration -------------------------------------------------------------------------------


@dataclass
class LabelPropConfig:
    """Hyper-parameters of the network and of its training.

    ``size``: the square working size slices are resized to (rounded down to a multiple of 8,
    never above the slice's own larger side rounded up to 8). One epoch visits every neighbouring
    pair of slices once in each direction, ``batch_size`` pairs per step.
    """

    size: int = 256
    max_epochs: int = 10
    batch_size: int = 4
    learning_rate: float = 2e-3
    smooth_weight: float = 0.01
    ncc_window: int = 9
    grad_clip: float = 1.0
    base_channels: int = 16
    seed: int | None = 0

    def __post_init__(self) -> None:
        for name in ("size", "max_epochs", "batch_size", "base_channels", "ncc_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LabelPropError(f"{name} must be a positive integer, got {value!r}")
        if self.max_epochs > 10_000:
            raise LabelPropError("max_epochs must be at most 10000")
        if self.ncc_window % 2 == 0:
            raise LabelPropError("ncc_window must be odd")
        for name in ("learning_rate", "smooth_weight", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise LabelPropError(f"{name} must be a non-negative number, got {value!r}")
        if self.learning_rate <= 0:
            raise LabelPropError("learning_rate must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def working_size(requested: int, slice_shape: Sequence[int]) -> int:
    """The square working size: ``requested`` rounded down to a multiple of 8, but no larger
    than the slice itself (rounded up to 8), and within [MIN_SIZE, MAX_SIZE]."""
    largest = max(int(s) for s in slice_shape)
    cap = max(MIN_SIZE, -(-largest // 8) * 8)
    size = (int(requested) // 8) * 8
    return int(min(MAX_SIZE, cap, max(MIN_SIZE, size)))


# --- the network ---------------------------------------------------------------------------------


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
    )


class RegistrationNet(nn.Module):
    """A small 2D U-Net: (moving, fixed) slices -> displacement field (B, 2, H, W).

    The field is in ``grid_sample``'s normalised coordinates (x then y, -1..1 across the slice),
    bounded by ``MAX_DISPLACEMENT`` (a smooth tanh limit), and starts at zero (identity) thanks
    to a zero-initialised output layer. H and W must be multiples of 8 (three 2x downsamplings);
    the network is fully convolutional, so one checkpoint serves any slice size.
    """

    def __init__(self, base_channels: int = 16) -> None:
        super().__init__()
        c = int(base_channels)
        self.base_channels = c
        self.enc0 = _block(2, c)
        self.enc1 = _block(c, 2 * c, stride=2)
        self.enc2 = _block(2 * c, 2 * c, stride=2)
        self.enc3 = _block(2 * c, 4 * c, stride=2)
        self.dec2 = _block(4 * c + 2 * c, 2 * c)
        self.dec1 = _block(2 * c + 2 * c, 2 * c)
        self.dec0 = _block(2 * c + c, c)
        self.flow = nn.Conv2d(c, 2, 3, padding=1)
        nn.init.zeros_(self.flow.weight)
        nn.init.zeros_(self.flow.bias)

    def forward(self, moving: Tensor, fixed: Tensor) -> Tensor:
        x0 = self.enc0(torch.cat([moving, fixed], dim=1))
        x1 = self.enc1(x0)
        x2 = self.enc2(x1)
        x3 = self.enc3(x2)
        y = self.dec2(torch.cat([_up(x3, x2), x2], dim=1))
        y = self.dec1(torch.cat([_up(y, x1), x1], dim=1))
        y = self.dec0(torch.cat([_up(y, x0), x0], dim=1))
        # Bounded (an eighth of the slice at most between neighbours): a diverging step cannot
        # push every sample onto the border, where no gradient would bring it back.
        return MAX_DISPLACEMENT * torch.tanh(self.flow(y) / MAX_DISPLACEMENT)


def _up(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def build_net(base_channels: int = 16, seed: int | None = 0) -> RegistrationNet:
    """A freshly initialised network (seeded without touching the global RNG state)."""
    if seed is None:
        return RegistrationNet(base_channels)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        return RegistrationNet(base_channels)


# --- warping and losses --------------------------------------------------------------------------


def identity_grid(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """The identity sampling grid (1, H, W, 2) of ``grid_sample`` (x, y in -1..1)."""
    ys = torch.linspace(-1.0, 1.0, height, device=device)
    xs = torch.linspace(-1.0, 1.0, width, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)[None]


def warp(image: Tensor, flow: Tensor, grid: Tensor | None = None) -> Tensor:
    """Sample ``image`` (B, C, H, W) at identity + ``flow`` (B, 2, H, W): out(x) = in(x + u(x))."""
    if grid is None:
        grid = identity_grid(*image.shape[-2:], device=image.device)
    return F.grid_sample(
        image,
        grid + flow.permute(0, 2, 3, 1),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )


def local_ncc(a: Tensor, b: Tensor, window: int = 9, eps: float = 1e-5) -> Tensor:
    """Local normalised cross-correlation map (B, 1, H, W) in -1..1 over ``window``-pixel boxes."""
    pad = window // 2

    def box(x: Tensor) -> Tensor:
        return F.avg_pool2d(x, window, stride=1, padding=pad, count_include_pad=False)

    mu_a, mu_b = box(a), box(b)
    var_a = (box(a * a) - mu_a * mu_a).clamp_min(0)
    var_b = (box(b * b) - mu_b * mu_b).clamp_min(0)
    cov = box(a * b) - mu_a * mu_b
    return cov / torch.sqrt(var_a * var_b + eps)


def _smoothness(flow: Tensor) -> Tensor:
    """Mean squared gradient of the field, measured in pixels per pixel."""
    height, width = flow.shape[-2:]
    scale = flow.new_tensor([(width - 1) / 2.0, (height - 1) / 2.0]).view(1, 2, 1, 1)
    u = flow * scale
    dy = u[:, :, 1:, :] - u[:, :, :-1, :]
    dx = u[:, :, :, 1:] - u[:, :, :, :-1]
    return (dy * dy).mean() + (dx * dx).mean()


def registration_loss(
    net: nn.Module, moving: Tensor, fixed: Tensor, config: LabelPropConfig
) -> Tensor:
    """Image dissimilarity (1 - local NCC) of the warped moving slice, plus smoothness."""
    flow = net(moving, fixed)
    warped = warp(moving, flow)
    dissimilarity = 1.0 - local_ncc(warped, fixed, config.ncc_window).mean()
    return dissimilarity + config.smooth_weight * _smoothness(flow)


# --- preparing volumes ---------------------------------------------------------------------------


def _check_volume(img: np.ndarray, name: str = "img") -> None:
    if img.ndim != 3:
        raise LabelPropError(f"{name} must be a 3D volume, got {img.ndim} dimensions")
    if min(img.shape) < 1:
        raise LabelPropError(f"{name} has an empty dimension: {tuple(img.shape)}")


def _check_axis(z_axis: int) -> int:
    if isinstance(z_axis, bool) or not isinstance(z_axis, int | np.integer) or not 0 <= z_axis < 3:
        raise LabelPropError(f"z_axis must be 0, 1 or 2, got {z_axis!r}")
    return int(z_axis)


def normalise_intensities(img: np.ndarray) -> np.ndarray:
    """float32 in 0..1 after clipping to the 1st and 99th percentiles (robust to outliers)."""
    x = np.asarray(img, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, 0.0).astype(np.float32)
    lo, hi = np.percentile(x, [1.0, 99.0]) if x.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _slices(img: np.ndarray, z_axis: int, size: int, device: torch.device) -> Tensor:
    """(Z, 1, size, size) normalised slices along ``z_axis``."""
    vol = np.moveaxis(normalise_intensities(img), z_axis, 0)
    t = torch.from_numpy(np.ascontiguousarray(vol)).to(device)[:, None]
    if tuple(t.shape[-2:]) != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=True)
    return t


def annotated_slices(mask: np.ndarray, z_axis: int = 0) -> list[int]:
    """Indices along ``z_axis`` of the slices holding at least one non-zero label."""
    _check_volume(np.asarray(mask), "mask")
    axes = tuple(a for a in range(3) if a != _check_axis(z_axis))
    return [int(i) for i in np.flatnonzero(np.asarray(mask).any(axis=axes))]


# --- training ------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    net: RegistrationNet
    epochs_completed: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False


def train_registration(
    img: np.ndarray,
    *,
    z_axis: int = 0,
    config: LabelPropConfig | None = None,
    net: RegistrationNet | None = None,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fit ``net`` (a new one when None) on the neighbouring slice pairs of ``img``.

    Unsupervised: every pair is registered in both directions (local NCC + smoothness); labels
    are not needed. One epoch visits each of the 2 (Z - 1) ordered pairs once. ``on_epoch(epoch,
    mean_loss)`` is called after every epoch (counted from 1); ``should_stop()`` is polled
    between steps, and a stopped run returns the epochs it completed.
    """
    config = config or LabelPropConfig()
    img = np.asarray(img)
    _check_volume(img)
    z_axis = _check_axis(z_axis)
    device = torch.device(device)
    depth = img.shape[z_axis]
    slice_shape = [s for a, s in enumerate(img.shape) if a != z_axis]
    size = working_size(config.size, slice_shape)
    net = net if net is not None else build_net(config.base_channels, config.seed)
    net.to(device).train()
    started = time.perf_counter()
    if depth < 2:
        net.eval()
        return TrainResult(net, 0, [], time.perf_counter() - started)

    slices = _slices(img, z_axis, size, device)
    lower = torch.arange(depth - 1, device=device)
    moving_index = torch.cat([lower, lower + 1])
    fixed_index = torch.cat([lower + 1, lower])
    pairs = moving_index.numel()
    generator = torch.Generator()
    if config.seed is not None:
        generator.manual_seed(int(config.seed))
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    losses: list[float] = []
    stopped = False
    completed = 0
    best: tuple[float, dict[str, Tensor]] | None = None
    for epoch in range(1, config.max_epochs + 1):
        order = torch.randperm(pairs, generator=generator).to(device)
        total = torch.zeros((), device=device)
        steps = 0
        for start in range(0, pairs, config.batch_size):
            if should_stop is not None and should_stop():
                stopped = True
                break
            batch = order[start : start + config.batch_size]
            loss = registration_loss(
                net, slices[moving_index[batch]], slices[fixed_index[batch]], config
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            optimizer.step()
            total += loss.detach()
            steps += 1
        if stopped:
            break
        completed = epoch
        mean = float(total / max(1, steps))
        losses.append(mean)
        if math.isfinite(mean) and (best is None or mean < best[0]):
            best = (mean, {k: v.detach().clone() for k, v in net.state_dict().items()})
        if on_epoch is not None:
            on_epoch(epoch, mean)
    if best is not None and losses and best[0] < losses[-1]:
        # A late divergence (all samples pushed to the border) is not kept: the best epoch is.
        net.load_state_dict(best[1])
    net.eval()
    return TrainResult(net, completed, losses, time.perf_counter() - started, stopped)


# --- propagation ---------------------------------------------------------------------------------


@dataclass
class Propagation:
    """Label volumes in the input's orientation and shape (uint8 when the labels fit)."""

    y_up: np.ndarray
    y_down: np.ndarray
    y_fused: np.ndarray
    annotated: list[int]
    labels: list[int]
    seconds: float = 0.0

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The protocol's npz members (uint8)."""
        return {
            "Y_up": self.y_up.astype(np.uint8),
            "Y_down": self.y_down.astype(np.uint8),
            "Y_fused": self.y_fused.astype(np.uint8),
        }


@torch.no_grad()
def _fields(net: nn.Module, slices: Tensor, chunk: int = 16) -> tuple[Tensor, Tensor]:
    """up[z] pulls slice z-1 onto slice z (z >= 1); down[z] pulls slice z+1 onto z (z <= Z-2)."""
    depth = slices.shape[0]
    up = torch.zeros(depth, 2, *slices.shape[-2:], device=slices.device)
    down = torch.zeros_like(up)
    for start in range(0, depth - 1, chunk):
        stop = min(depth - 1, start + chunk)
        below, above = slices[start:stop], slices[start + 1 : stop + 1]
        up[start + 1 : stop + 1] = net(below, above)
        down[start:stop] = net(above, below)
    return up, down


def _compose(coords: Tensor, flow: Tensor, grid: Tensor) -> Tensor:
    """G'(x) = G(x + u(x)) for a sampling grid G (1, H, W, 2) and a field u (1, 2, H, W)."""
    return warp(coords.permute(0, 3, 1, 2), flow, grid).permute(0, 2, 3, 1)


def _sample(image: Tensor, coords: Tensor) -> Tensor:
    return F.grid_sample(image, coords, mode="bilinear", padding_mode="border", align_corners=True)


@torch.no_grad()
def _one_way(
    slices: Tensor, onehot: dict[int, Tensor], fields: Tensor, order: range, grid: Tensor
) -> tuple[dict[int, Tensor], dict[int, Tensor], dict[int, int]]:
    """Carry each annotated slice along ``order`` until the next annotated one.

    The sampling grid is composed slice after slice (G_z(x) = G_prev(x + u_z(x))) and the
    source annotation is warped once through it, so labels are interpolated once, not once per
    slice. Returns the label probabilities, the warped source image and the distance to the
    source of every slice reached.
    """
    probs: dict[int, Tensor] = {}
    images: dict[int, Tensor] = {}
    distance: dict[int, int] = {}
    source: int | None = None
    coords = grid
    for z in order:
        if z in onehot:
            source, coords = z, grid
            continue
        if source is None:
            continue
        coords = _compose(coords, fields[z : z + 1], grid)
        probs[z] = _sample(onehot[source], coords)
        images[z] = _sample(slices[source : source + 1], coords)
        distance[z] = abs(z - source)
    return probs, images, distance


def _similarity_weight(warped: Tensor, target: Tensor, reduction: str, window: int) -> Tensor:
    """How well a direction's warped image matches the target: (1, 1, H, W) or (1, 1, 1, 1)."""
    ncc = local_ncc(warped, target, window).clamp(-1.0, 1.0)
    weight = ((ncc + 1.0) / 2.0).clamp_min(1e-3)
    if reduction == "mean":
        return weight.mean(dim=(-2, -1), keepdim=True)
    if reduction == "local_mean":
        k = 4 * (window // 2) + 1
        return F.avg_pool2d(weight, k, stride=1, padding=k // 2, count_include_pad=False)
    return weight


@torch.no_grad()
def propagate(
    net: RegistrationNet,
    img: np.ndarray,
    mask: np.ndarray,
    *,
    z_axis: int = 0,
    size: int = 256,
    label: int = 0,
    criteria: str = "distance",
    reduction: str = "none",
    device: torch.device | str = "cpu",
    ncc_window: int = 9,
) -> Propagation:
    """Propagate the annotated slices of ``mask`` through ``img`` along ``z_axis``.

    ``label``: 0 propagates every label; another value only that one (the others are dropped).
    Annotated slices are copied unchanged into all three outputs; slices that only one direction
    reaches (before the first or after the last annotation) take that direction.
    """
    started = time.perf_counter()
    img, mask = np.asarray(img), np.asarray(mask)
    _check_volume(img)
    _check_volume(mask, "mask")
    z_axis = _check_axis(z_axis)
    if img.shape != mask.shape:
        raise LabelPropError(
            f"mask shape {tuple(mask.shape)} does not match img shape {tuple(img.shape)}"
        )
    if criteria not in CRITERIA:
        raise LabelPropError(f"criteria must be one of {', '.join(CRITERIA)}, got {criteria!r}")
    if reduction not in REDUCTIONS:
        raise LabelPropError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if not np.issubdtype(mask.dtype, np.integer) and not np.issubdtype(mask.dtype, np.bool_):
        if not np.all(np.mod(mask, 1) == 0):
            raise LabelPropError("mask must hold integer labels")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise LabelPropError("mask labels must lie in 0..255")
    mask = np.moveaxis(mask.astype(np.int64), z_axis, 0)
    if label:
        mask = np.where(mask == int(label), mask, 0)
    values = [int(v) for v in np.unique(mask) if v != 0]
    if not values:
        what = f"label {label}" if label else "a label"
        raise LabelPropError(f"no slice of the mask holds {what}: annotate at least one slice")
    depth, height, width = mask.shape
    device = torch.device(device)
    size = working_size(size, (height, width))
    slices = _slices(img, z_axis, size, device)
    lookup = np.zeros(256, dtype=np.int64)
    lookup[values] = np.arange(1, len(values) + 1)
    channels = len(values) + 1
    annotated = [int(z) for z in np.flatnonzero(mask.reshape(depth, -1).any(axis=1))]

    onehot: dict[int, Tensor] = {}
    for z in annotated:
        index = torch.from_numpy(lookup[mask[z]]).to(device)
        hot = F.one_hot(index, channels).permute(2, 0, 1)[None].float()
        if (height, width) != (size, size):
            hot = F.interpolate(hot, size=(size, size), mode="bilinear", align_corners=True)
        onehot[z] = hot

    net = net.to(device).eval()
    up_fields, down_fields = _fields(net, slices)
    grid = identity_grid(size, size, device)
    p_up, w_up, d_up = _one_way(slices, onehot, up_fields, range(depth), grid)
    p_down, w_down, d_down = _one_way(slices, onehot, down_fields, range(depth - 1, -1, -1), grid)

    palette = np.array([0, *values], dtype=np.uint8)
    y_up = np.zeros((depth, height, width), dtype=np.uint8)
    y_down = np.zeros_like(y_up)
    y_fused = np.zeros_like(y_up)

    def labels_of(prob: Tensor) -> np.ndarray:
        if (height, width) != (size, size):
            prob = F.interpolate(prob, size=(height, width), mode="bilinear", align_corners=True)
        return palette[prob[0].argmax(dim=0).cpu().numpy()]

    for z in range(depth):
        if z in onehot:
            y_up[z] = y_down[z] = y_fused[z] = palette[lookup[mask[z]]]
            continue
        up, down = p_up.get(z), p_down.get(z)
        if up is not None:
            y_up[z] = labels_of(up)
        if down is not None:
            y_down[z] = labels_of(down)
        if up is None or down is None:
            y_fused[z] = y_up[z] if up is not None else y_down[z]
            continue
        # The nearer annotation weighs more: weight of one side = distance to the other side.
        a, b = float(d_down[z]), float(d_up[z])
        weight_up = up.new_full((1, 1, 1, 1), a / (a + b))
        weight_down = up.new_full((1, 1, 1, 1), b / (a + b))
        if criteria == "ncc":
            target = slices[z : z + 1]
            weight_up = weight_up * _similarity_weight(w_up[z], target, reduction, ncc_window)
            weight_down = weight_down * _similarity_weight(w_down[z], target, reduction, ncc_window)
        y_fused[z] = labels_of(weight_up * up + weight_down * down)

    def back(volume: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(volume, 0, z_axis))

    return Propagation(
        back(y_up),
        back(y_down),
        back(y_fused),
        annotated,
        values,
        time.perf_counter() - started,
    )


# --- checkpoints ---------------------------------------------------------------------------------


def checkpoint_to_bytes(net: RegistrationNet, metadata: dict[str, Any] | None = None) -> bytes:
    """The network's weights as safetensors, with its architecture and ``metadata`` as JSON."""
    from ml.checkpoints import state_to_bytes

    meta = {
        "format": CHECKPOINT_FORMAT,
        "base_channels": net.base_channels,
        **(metadata or {}),
    }
    return state_to_bytes(net.state_dict(), {_META_KEY: json.dumps(meta)})


def checkpoint_from_bytes(data: bytes) -> tuple[RegistrationNet, dict[str, Any]]:
    """Rebuild a network from :func:`checkpoint_to_bytes` output; LabelPropError otherwise."""
    from ml.checkpoints import CheckpointError, load_compatible, state_from_bytes

    try:
        state, raw = state_from_bytes(data)
    except CheckpointError as exc:
        raise LabelPropError(f"not a labelprop checkpoint: {exc}") from None
    try:
        meta = json.loads(raw.get(_META_KEY, ""))
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise LabelPropError(f"not a labelprop checkpoint (format {CHECKPOINT_FORMAT} expected)")
    channels = meta.get("base_channels")
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 256:
        raise LabelPropError("not a labelprop checkpoint: bad base_channels")
    net = RegistrationNet(channels)
    try:
        load_compatible(net, state)
    except CheckpointError as exc:
        raise LabelPropError(f"checkpoint does not fit the network: {exc}") from None
    net.eval()
    return net, meta


# --- test volumes and metrics --------------------------------------------------------------------


def make_volume(
    shape: Sequence[int] = (24, 64, 64),
    *,
    objects: int = 2,
    drift: float = 1.2,
    growth: float = 0.35,
    noise: float = 0.08,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A test volume (float32 image, uint8 labels) of ellipses that drift, grow and turn from
    slice to slice along axis 0, on a smooth background with Gaussian noise.

    Object ``k`` has label ``k + 1`` and its own brightness; ``drift`` is pixels per slice,
    ``growth`` the change of the radii per slice (growing, then shrinking).
    """
    depth, height, width = (int(s) for s in shape)
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    img = np.empty((depth, height, width), dtype=np.float32)
    labels = np.zeros((depth, height, width), dtype=np.uint8)
    background = 0.2 + 0.08 * np.sin(xx / max(1, width) * 2 * np.pi) * np.cos(
        yy / max(1, height) * 3 * np.pi
    )
    specs = []
    for k in range(objects):
        specs.append(
            {
                "cy": height * (0.35 + 0.3 * k) + rng.uniform(-2, 2),
                "cx": width * (0.3 + 0.1 * k) + rng.uniform(-2, 2),
                "ry": min(height, width) * rng.uniform(0.12, 0.16),
                "rx": min(height, width) * rng.uniform(0.16, 0.2),
                "vy": drift * rng.uniform(-0.5, 0.5),
                "vx": drift * (1.0 if k % 2 == 0 else -0.6),
                "turn": rng.uniform(0.03, 0.06),
                "phase": rng.uniform(0, np.pi),
                "value": 0.65 + 0.25 * k,
            }
        )
    middle = (depth - 1) / 2.0
    for z in range(depth):
        slice_img = background.copy()
        for k, s in enumerate(specs):
            grow = growth * (middle - abs(z - middle))
            ry, rx = s["ry"] + grow, s["rx"] + grow
            t = z - middle
            cy = s["cy"] + s["vy"] * t + 1.5 * np.sin(z * 0.3 + s["phase"])
            cx = s["cx"] + s["vx"] * t
            angle = s["turn"] * z
            dy, dx = yy - cy, xx - cx
            u = dx * np.cos(angle) + dy * np.sin(angle)
            v = -dx * np.sin(angle) + dy * np.cos(angle)
            inside = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
            labels[z][inside] = k + 1
            slice_img[inside] = s["value"]
        img[z] = slice_img
    img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    return img, labels


def sparse_annotation(labels: np.ndarray, every: int, z_axis: int = 0) -> np.ndarray:
    """Keep the labels of every ``every``-th slice along ``z_axis`` (from the first), zero the rest."""
    out = np.zeros_like(labels)
    index = [slice(None)] * 3
    index[z_axis] = slice(0, labels.shape[z_axis], every)
    out[tuple(index)] = labels[tuple(index)]
    return out


def nearest_slice_labels(mask: np.ndarray, z_axis: int = 0) -> np.ndarray:
    """The naive baseline: every slice copies the nearest annotated slice (the lower on ties)."""
    annotated = np.array(annotated_slices(mask, z_axis))
    if annotated.size == 0:
        raise LabelPropError("no annotated slice")
    vol = np.moveaxis(np.asarray(mask), z_axis, 0)
    z = np.arange(vol.shape[0])
    nearest = annotated[np.abs(z[:, None] - annotated[None, :]).argmin(axis=1)]
    return np.ascontiguousarray(np.moveaxis(vol[nearest], 0, z_axis))


def dice(
    pred: np.ndarray, true: np.ndarray, *, labels: Sequence[int] | None = None, where=None
) -> float:
    """Mean Dice over ``labels`` (default: the non-zero labels of ``true``), optionally only on
    the voxels selected by the boolean ``where``; 1.0 when a label is absent from both."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"shapes differ: {pred.shape} and {true.shape}")
    if where is not None:
        pred, true = pred[where], true[where]
    if labels is None:
        labels = [int(v) for v in np.unique(true) if v != 0]
    scores = []
    for value in labels:
        p, t = pred == value, true == value
        total = int(p.sum()) + int(t.sum())
        scores.append(1.0 if total == 0 else 2.0 * int((p & t).sum()) / total)
    return float(np.mean(scores)) if scores else 1.0
