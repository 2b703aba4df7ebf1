"""Label propagation through a 3D volume: learned slice-to-slice registration, shape
interpolation along the fields, and the annotated slices' intensities (pure torch + scipy's
distance transform).

A user annotates a few slices of a volume along one axis; the labels are carried to every other
slice:

- Slices are normalised (1st-99th percentiles) and smoothed by a Gaussian whose width follows the
  noise level estimated on them (:func:`prepare_slices`), in training and propagation alike, so
  that the registration matches anatomy, not noise.
- :class:`RegistrationNet`, a small 2D U-Net, takes a pair of slices (moving, fixed) and predicts
  a dense displacement field; :func:`warp` applies it with ``torch.nn.functional.grid_sample``.
  :func:`train_registration` fits it on a volume's neighbouring slice pairs (both directions)
  without labels: local normalised cross-correlation at full and half resolution plus a
  smoothness penalty (Adam, clipped gradients; the best epoch is kept). A checkpoint
  (:func:`checkpoint_to_bytes`, safetensors) records the working size really trained at and is
  fully convolutional, so it can be reused on other volumes.
- :func:`propagate` carries each annotated slice's signed distance maps (one per label) upwards
  (``Y_up``) and downwards (``Y_down``) through the fields composed slice after slice. The
  annotations check the fields: over each gap, a direction that carries one annotation onto the
  next worse than leaving it in place is blended back towards plain shape interpolation and
  weighs less in the fusion. ``Y_fused`` interpolates the two directions' signed distances,
  weighted by the distance to each annotation (``criteria="ncc"``: also by how well each
  direction's warped image matches the slice). Finally, every output is corrected by the
  labels' intensities as the annotated slices show them (inside each label and in a ring
  around it, interpolated between annotated slices): a label may move away from where the
  propagation put it by a margin that grows with the distance to the annotations, where the
  image says so (:func:`_corrected_logits`). Hints are extra annotated slices.

:mod:`ml.volumes_synth` generates the volumes the method is measured on (bench/labelprop.py);
:func:`nearest_slice_labels` and :func:`sdf_interpolation_labels` are the baselines that
:func:`dice` compares against.
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
    "noise_level",
    "normalise_intensities",
    "prepare_slices",
    "propagate",
    "registration_loss",
    "sdf_interpolation_labels",
    "signed_distance",
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
        assert self.flow.bias is not None
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
        height, width = image.shape[-2:]
        grid = identity_grid(height, width, device=image.device)
    return F.grid_sample(
        image,
        grid + flow.permute(0, 2, 3, 1),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )


def box_filter(x: Tensor, window: int) -> Tensor:
    """Mean over ``window`` x ``window`` boxes (odd), borders replicated, by cumulative sums
    (several times faster than a stride-1 avg_pool2d on CPUs)."""
    r = window // 2
    p = F.pad(x, (r + 1, r, r + 1, r), mode="replicate")
    c = p.cumsum(-1)
    c = c[..., window:] - c[..., :-window]
    c = c.cumsum(-2)
    c = c[..., window:, :] - c[..., :-window, :]
    return c / float(window * window)


def local_ncc(a: Tensor, b: Tensor, window: int = 9, eps: float = 1e-5) -> Tensor:
    """Local normalised cross-correlation map (B, 1, H, W) in -1..1 over ``window``-pixel boxes."""

    def box(x: Tensor) -> Tensor:
        return box_filter(x, window)

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
    """Image dissimilarity of the warped moving slice at two scales (1 - local NCC at full
    and at half resolution: the coarse term sees anatomy rather than noise), plus smoothness.
    Callers pass smoothed slices (:func:`prepare_slices`)."""
    flow = net(moving, fixed)
    warped = warp(moving, flow)
    dissimilarity = 1.0 - local_ncc(warped, fixed, config.ncc_window).mean()
    if min(moving.shape[-2:]) >= 16:
        coarse = max(3, (config.ncc_window // 2) | 1)
        dissimilarity = (
            dissimilarity
            + 1.0
            - local_ncc(F.avg_pool2d(warped, 2), F.avg_pool2d(fixed, 2), coarse).mean()
        )
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


def noise_level(slices: Tensor) -> float:
    """Robust estimate of the Gaussian noise's sigma in (N, 1, H, W) slices (0..1 intensities):
    the median absolute deviation of horizontal neighbour differences (edges are outliers)."""
    d = (slices[..., :, 1:] - slices[..., :, :-1]).flatten()
    if d.numel() > 2_000_000:
        d = d[:: d.numel() // 2_000_000 + 1]
    mad = (d - d.median()).abs().median()
    return float(1.4826 * mad / math.sqrt(2.0))


def smoothing_sigma(noise: float) -> float:
    """Gaussian smoothing (pixels) applied before registration, more for noisier images: the
    similarity then measures anatomy, not noise."""
    return float(min(3.0, 0.6 + 10.0 * max(0.0, noise)))


def smooth(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W), reflecting at the borders."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(2.5 * sigma)))
    radius = min(radius, (min(x.shape[-2:]) - 1) // 2) or 1
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _slices(img: np.ndarray, z_axis: int, size: int, device: torch.device) -> Tensor:
    """(Z, 1, size, size) normalised slices along ``z_axis``."""
    vol = np.moveaxis(normalise_intensities(img), z_axis, 0)
    t = torch.from_numpy(np.ascontiguousarray(vol)).to(device)[:, None]
    if tuple(t.shape[-2:]) != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=True)
    return t


def prepare_slices(
    img: np.ndarray, z_axis: int, size: int, device: torch.device
) -> tuple[Tensor, float]:
    """(Z, 1, size, size) normalised slices, smoothed for the noise level estimated on them
    (a Gaussian of :func:`smoothing_sigma` pixels at 128, scaled with ``size``), and that level:
    what registration sees, in training and in propagation alike."""
    slices = _slices(img, z_axis, size, device)
    noise = noise_level(slices)
    return smooth(slices, smoothing_sigma(noise) * size / 128.0), noise


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
    size: int = 0  # the working size the slices were trained at (recorded in checkpoints)


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
        return TrainResult(net, 0, [], time.perf_counter() - started, size=size)

    slices, _noise = prepare_slices(img, z_axis, size, device)
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
    return TrainResult(net, completed, losses, time.perf_counter() - started, stopped, size)


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
    noise: float = 0.0
    hint_slices: list[int] = field(default_factory=list)

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The protocol's npz members (uint8)."""
        return {
            "Y_up": self.y_up.astype(np.uint8),
            "Y_down": self.y_down.astype(np.uint8),
            "Y_fused": self.y_fused.astype(np.uint8),
        }


def signed_distance(binary: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, float32) to the boundary of a 2D mask: negative inside; the
    slice's diagonal (outside) for an empty mask."""
    from scipy.ndimage import distance_transform_edt

    binary = np.asarray(binary, dtype=bool)
    if not binary.any():
        return np.full(binary.shape, float(np.hypot(*binary.shape)), dtype=np.float32)
    if binary.all():
        return np.full(binary.shape, -float(np.hypot(*binary.shape)), dtype=np.float32)
    outside = distance_transform_edt(~binary)
    inside = distance_transform_edt(binary)
    return (outside - inside + 0.5 * (inside > 0) - 0.5 * (outside > 0)).astype(np.float32)


def _labels_from_sdf(phi: Tensor, palette: np.ndarray) -> np.ndarray:
    """(1, L, H, W) signed distances of L labels -> label map: the label of the smallest
    negative distance, background where none is negative."""
    best, index = phi[0].min(dim=0)
    out = palette[1:][index.cpu().numpy()]
    out[(best >= 0).cpu().numpy()] = 0
    return out


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
    """G'(x) = G(x + u(x)) for sampling grids G (B, H, W, 2) and fields u (B, 2, H, W)."""
    return warp(coords.permute(0, 3, 1, 2), flow, grid).permute(0, 2, 3, 1)


def _sample(image: Tensor, coords: Tensor) -> Tensor:
    return F.grid_sample(image, coords, mode="bilinear", padding_mode="border", align_corners=True)


@dataclass
class IntensityModel:
    """How the intensities of one annotated slice's labels differ from their surroundings:
    per label, the median and robust spread (MAD) of the smoothed image inside it and in a
    ring just outside it (``None`` where the label is absent)."""

    stats: list[tuple[float, float, float, float] | None]


def _class_stats(image: Tensor, labels: Tensor, values: list[int], ring: int) -> IntensityModel:
    """``image`` (H, W) smoothed, ``labels`` (H, W) at the same size."""
    stats: list[tuple[float, float, float, float] | None] = []
    for value in values:
        inside = labels == value
        if int(inside.sum()) < 4:
            stats.append(None)
            continue
        grown = F.max_pool2d(inside[None, None].float(), 2 * ring + 1, 1, ring)[0, 0] > 0
        outside = grown & ~inside
        if int(outside.sum()) < 4:
            stats.append(None)
            continue
        a, b = image[inside], image[outside]
        mid_a, mid_b = a.median(), b.median()
        spread_a = 1.4826 * (a - mid_a).abs().median()
        spread_b = 1.4826 * (b - mid_b).abs().median()
        stats.append((float(mid_a), float(spread_a), float(mid_b), float(spread_b)))
    return IntensityModel(stats)


def _interpolated_stats(
    models: list[tuple[float, IntensityModel]], label_index: int
) -> tuple[float, float, float, float] | None:
    """A label's statistics at a slice between annotated ones, from (weight, model) pairs."""
    present = [(w, m.stats[label_index]) for w, m in models if m.stats[label_index] is not None]
    if not present:
        return None
    total = sum(w for w, _ in present)
    mixed = [sum(w * s[i] for w, s in present) / total for i in range(4)]  # type: ignore[index, misc]
    return mixed[0], mixed[1], mixed[2], mixed[3]


# Intensity-guided correction: how far a label may move from where the propagation put it
# grows with the distance (in slices) to the annotation it came from.
PRIOR_TAU_PX = 1.5
PRIOR_TAU_PER_SLICE = 0.4
LIKELIHOOD_WEIGHT = 0.5
LIKELIHOOD_CLIP = 8.0
MIN_SPREAD = 0.05
RING_PX = 6


def _corrected_logits(
    phi: Tensor,
    image: Tensor,
    models: list[tuple[float, IntensityModel]],
    distance: float,
    scale: float,
) -> Tensor:
    """(1, L, H, W) label logits: the propagated signed distances as a prior whose sharpness
    falls with ``distance`` to the annotations, plus the (tempered, clipped) log-likelihood
    ratio of each pixel's smoothed intensity under the label's intensities versus those of
    its surroundings, as measured on the annotated slices. Where the intensities do not tell
    the label from its surroundings, the ratio is ~0 and the propagation decides alone."""
    tau = (PRIOR_TAU_PX + PRIOR_TAU_PER_SLICE * distance) * scale
    logits = -phi / tau
    out = []
    for i in range(phi.shape[1]):
        stats = _interpolated_stats(models, i)
        if stats is None:
            out.append(logits[:, i])
            continue
        mid_in, spread_in, mid_out, spread_out = stats
        spread_in, spread_out = max(spread_in, MIN_SPREAD), max(spread_out, MIN_SPREAD)
        llr = (
            -0.5 * ((image - mid_in) / spread_in) ** 2
            + 0.5 * ((image - mid_out) / spread_out) ** 2
            + math.log(spread_out / spread_in)
        ).clamp(-LIKELIHOOD_CLIP, LIKELIHOOD_CLIP)
        out.append(logits[:, i] + LIKELIHOOD_WEIGHT * llr[:, 0])
    return torch.stack(out, dim=1)


def _fill_absent(phi: Tensor, other: Tensor | None) -> Tensor:
    """A label absent from one annotated slice but present at the other end: instead of an
    'infinitely far' distance, take the other end's shape shrunk to nothing (its distances
    shifted so that its deepest point sits on the boundary), so it grows or vanishes smoothly."""
    if other is None:
        return phi
    absent = (phi.amin(dim=(-2, -1), keepdim=True) > 0) & (
        other.amin(dim=(-2, -1), keepdim=True) < 0
    )
    if not bool(absent.any()):
        return phi
    shrunk = other - other.amin(dim=(-2, -1), keepdim=True)
    return torch.where(absent, shrunk, phi)


@torch.no_grad()
def _one_way(
    slices: Tensor, sdf: dict[int, Tensor], fields: Tensor, order: range, grid: Tensor
) -> tuple[dict[int, Tensor], dict[int, Tensor], dict[int, int], dict[int, Tensor]]:
    """Carry each annotated slice's signed distances along ``order`` until the next annotated
    one, through the sampling grid composed slice after slice (G_z(x) = G_prev(x + u_z(x)));
    the source is resampled once per slice, never re-warped. Returns the distances, the
    warped source image and the distance (in slices) to the source of every slice reached,
    and, for every annotated slice reached from another, what arrived there (to check the
    fields against the annotation)."""
    phis: dict[int, Tensor] = {}
    images: dict[int, Tensor] = {}
    distance: dict[int, int] = {}
    arrivals: dict[int, Tensor] = {}
    source: int | None = None
    coords = grid
    for z in order:
        if source is not None:
            coords = _compose(coords, fields[z : z + 1], grid)
            if z in sdf:
                arrivals[z] = _sample(sdf[source], coords)
            else:
                phis[z] = _sample(sdf[source], coords)
                images[z] = _sample(slices[source : source + 1], coords)
                distance[z] = abs(z - source)
        if z in sdf:
            source, coords = z, grid
    return phis, images, distance, arrivals


def _overlap(phi: Tensor, target: Tensor) -> float:
    """Mean Dice of the labels (phi < 0) of two (1, L, H, W) signed distance stacks."""
    a, b = phi[0] < 0, target[0] < 0
    sizes = a.sum(dim=(-2, -1)) + b.sum(dim=(-2, -1))
    common = (a & b).sum(dim=(-2, -1))
    present = sizes > 0
    if not bool(present.any()):
        return 1.0
    return float((2.0 * common[present] / sizes[present]).mean())


# A direction's fields are trusted over a gap as far as they carry the annotation at one end
# onto the one at the other end better than leaving it in place does (Dice): equal, half and
# half with the unwarped annotation; TRUST_MARGIN better or more, fully.
TRUST_MARGIN = 0.05
# In the fusion, a direction not trusted at all still weighs this much of its distance weight.
MIN_CONFIDENCE = 0.25


def _trust(arrived: Tensor, source: Tensor, target: Tensor) -> float:
    gain = _overlap(arrived, target) - _overlap(source, target)
    return float(min(1.0, max(0.0, 0.5 + 0.5 * gain / TRUST_MARGIN)))


def _checked(
    phis: dict[int, Tensor],
    images: dict[int, Tensor],
    arrivals: dict[int, Tensor],
    sdf: dict[int, Tensor],
    slices: Tensor,
    gaps: list[tuple[int, int]],
) -> dict[int, float]:
    """Blend one direction's warped distances and images, gap by gap, with its unwarped
    source by how much its fields are trusted there (:func:`_trust`); returns the trust of
    every slice in a checked gap. ``gaps``: (source, arrival) annotated slice pairs."""
    trust: dict[int, float] = {}
    for source, end in gaps:
        if end not in arrivals:
            continue
        weight = _trust(arrivals[end], sdf[source], sdf[end])
        step = 1 if end > source else -1
        for z in range(source + step, end, step):
            trust[z] = weight
            if weight < 1.0 and z in phis:
                phis[z] = weight * phis[z] + (1.0 - weight) * sdf[source]
                images[z] = weight * images[z] + (1.0 - weight) * slices[source : source + 1]
    return trust


def _similarity_weight(warped: Tensor, target: Tensor, reduction: str, window: int) -> Tensor:
    """How well a direction's warped image matches the target: (1, 1, H, W) or (1, 1, 1, 1),
    smoothed so that a noisy pixel cannot flip the fused label."""
    ncc = local_ncc(warped, target, window).clamp(-1.0, 1.0)
    weight = ((ncc + 1.0) / 2.0).clamp_min(1e-3)
    if reduction == "mean":
        return weight.mean(dim=(-2, -1), keepdim=True)
    k = 4 * (window // 2) + 1 if reduction == "local_mean" else window
    return box_filter(weight, k)


def merge_hints(mask: np.ndarray, hints: np.ndarray | None) -> tuple[np.ndarray, list[int]]:
    """The annotations: ``mask``, plus the slices of ``hints`` (axis 0) that the mask leaves
    empty, taken as extra annotated slices. Returns the merged labels and the hint slices."""
    if hints is None:
        return mask, []
    hints = np.asarray(hints)
    if hints.shape != mask.shape:
        raise LabelPropError(
            f"hints shape {tuple(hints.shape)} does not match mask shape {tuple(mask.shape)}"
        )
    has_mask = mask.reshape(mask.shape[0], -1).any(axis=1)
    has_hint = hints.reshape(hints.shape[0], -1).any(axis=1)
    extra = [int(z) for z in np.flatnonzero(has_hint & ~has_mask)]
    if not extra:
        return mask, []
    merged = mask.copy()
    merged[extra] = hints[extra].astype(mask.dtype)
    return merged, extra


def _check_labels(array: np.ndarray, name: str) -> None:
    if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.bool_):
        if not np.all(np.mod(array, 1) == 0):
            raise LabelPropError(f"{name} must hold integer labels")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise LabelPropError(f"{name} labels must lie in 0..255")


@torch.no_grad()
def _check_fusion(criteria: str, reduction: str) -> None:
    """:func:`propagate`'s fusion options: known criteria and reduction."""
    if criteria not in CRITERIA:
        raise LabelPropError(f"criteria must be one of {', '.join(CRITERIA)}, got {criteria!r}")
    if reduction not in REDUCTIONS:
        raise LabelPropError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


def _side_weights(
    up: Tensor, a: float, b: float, trust_up: float, trust_down: float
) -> tuple[Tensor, Tensor]:
    """The fusion weights of a slice's up side (carried from the annotation ``b`` slices below)
    and down side (from the one ``a`` slices above): the nearer annotation weighs more (one
    side's weight is the distance to the other side), a side less trusted (see
    :func:`_checked`) less."""
    confidence_up = MIN_CONFIDENCE + (1 - MIN_CONFIDENCE) * trust_up
    confidence_down = MIN_CONFIDENCE + (1 - MIN_CONFIDENCE) * trust_down
    weight_up = up.new_full((1, 1, 1, 1), confidence_up * a / (a + b))
    weight_down = up.new_full((1, 1, 1, 1), confidence_down * b / (a + b))
    return weight_up, weight_down


def _annotations(
    img: np.ndarray, mask: np.ndarray, hints: np.ndarray | None, *, z_axis: int, label: int
) -> tuple[np.ndarray, list[int], list[int]]:
    """:func:`propagate`'s annotations, checked, with ``z_axis`` first: the mask merged with the
    hints (and kept to ``label`` when given), the hinted slices, and the labels present."""
    _check_labels(mask, "mask")
    mask = np.moveaxis(mask.astype(np.int64), z_axis, 0)
    if hints is not None:
        hints = np.asarray(hints)
        if hints.shape != img.shape:
            raise LabelPropError(
                f"hints shape {tuple(hints.shape)} does not match img shape {tuple(img.shape)}"
            )
        _check_labels(hints, "hints")
        hints = np.moveaxis(hints.astype(np.int64), z_axis, 0)
    mask, hint_slices = merge_hints(mask, hints)
    if label:
        mask = np.where(mask == int(label), mask, 0)
    values = [int(v) for v in np.unique(mask) if v != 0]
    if not values:
        what = f"label {label}" if label else "a label"
        raise LabelPropError(f"no slice of the mask holds {what}: annotate at least one slice")
    return mask, hint_slices, values


def _annotated_slice(
    labels: np.ndarray, values: list[int], label_size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """One annotated slice's signed distance maps (one per label value) and its labels, at the
    labels' working size (distances rescaled with the slice)."""
    height, width = labels.shape
    maps = np.stack([signed_distance(labels == v) for v in values])
    t = torch.from_numpy(maps).to(device)[None]
    labels_z = torch.from_numpy(labels).to(device)
    if (height, width) != (label_size, label_size):
        t = F.interpolate(t, size=(label_size, label_size), mode="bilinear", align_corners=True)
        t = t * (label_size / max(height, width))
        labels_z = F.interpolate(
            labels_z[None, None].float(), size=(label_size, label_size), mode="nearest"
        )[0, 0].long()
    return t, labels_z


def _annotation_maps(
    mask: np.ndarray,
    annotated: list[int],
    values: list[int],
    smoothed: Tensor,
    *,
    label_size: int,
    device: torch.device,
    intensity: bool,
) -> tuple[dict[int, Tensor], dict[int, IntensityModel]]:
    """The signed distance maps of every annotated slice and, with ``intensity``, the intensity
    model of its labels (measured on rings of RING_PX pixels at 128 px, scaled)."""
    scale = label_size / 128.0
    sdf: dict[int, Tensor] = {}
    models: dict[int, IntensityModel] = {}
    for z in annotated:
        sdf[z], labels_z = _annotated_slice(mask[z], values, label_size, device)
        if intensity:
            models[z] = _class_stats(
                smoothed[z, 0], labels_z, values, max(2, round(RING_PX * scale))
            )
    return sdf, models


def _z_back(volume: np.ndarray, z_axis: int) -> np.ndarray:
    """A (z, y, x) volume with its z axis put back where the input had it."""
    return np.ascontiguousarray(np.moveaxis(volume, 0, z_axis))


def _label_fields(
    net: RegistrationNet | None,
    smoothed: Tensor,
    *,
    size: int,
    shape: tuple[int, int],
    label_size: int,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """The up and down registration fields of every slice at the labels' working size: the
    network's at its own working size, resampled (zero fields without a network)."""
    if net is None:
        up_fields = torch.zeros(smoothed.shape[0], 2, label_size, label_size, device=device)
        return up_fields, torch.zeros_like(up_fields)
    net_size = working_size(size, shape)
    net_input = smoothed
    if net_size != label_size:
        net_input = F.interpolate(smoothed, size=(net_size, net_size), mode="area")
    up_fields, down_fields = _fields(net.to(device).eval(), net_input)
    if net_size != label_size:
        up_fields = F.interpolate(
            up_fields, size=(label_size, label_size), mode="bilinear", align_corners=True
        )
        down_fields = F.interpolate(
            down_fields, size=(label_size, label_size), mode="bilinear", align_corners=True
        )
    return up_fields, down_fields


def propagate(  # noqa: PLR0913
    net: RegistrationNet | None,
    img: np.ndarray,
    mask: np.ndarray,
    *,
    hints: np.ndarray | None = None,
    z_axis: int = 0,
    size: int = 256,
    label: int = 0,
    criteria: str = "distance",
    reduction: str = "none",
    device: torch.device | str = "cpu",
    ncc_window: int = 9,
    intensity: bool = True,
) -> Propagation:
    """Propagate the annotated slices of ``mask`` (and of ``hints``, as extra annotated slices
    where the mask has none) through ``img`` along ``z_axis``.

    Slices are normalised and smoothed by the estimated noise level; the network (``size``: its
    working size; None: identity fields) registers neighbouring slices. Each annotated slice's
    signed distance maps are carried up and down through the composed fields. ``Y_up`` and
    ``Y_down`` are each direction alone; ``Y_fused`` interpolates the two directions' signed
    distances with weights by distance to each annotation (with ``criteria="ncc"`` also by how
    well each direction's warped image matches the slice, reduced by ``reduction``). With
    ``intensity``, every output is then corrected by the labels' intensities as the annotated
    slices show them (:func:`_corrected_logits`): the annotations supervise the result.

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
    _check_fusion(criteria, reduction)
    mask, hint_slices, values = _annotations(img, mask, hints, z_axis=z_axis, label=label)
    depth, height, width = mask.shape
    device = torch.device(device)
    # Labels are carried at the slice's own resolution (at most MAX_SIZE); the network works at
    # its own size and its fields are resampled (they are smooth).
    label_size = working_size(max(height, width), (height, width))
    scale = label_size / 128.0
    smoothed, noise = prepare_slices(img, z_axis, label_size, device)
    palette = np.array([0, *values], dtype=np.uint8)
    annotated = [int(z) for z in np.flatnonzero(mask.reshape(depth, -1).any(axis=1))]

    sdf, models = _annotation_maps(
        mask, annotated, values, smoothed, label_size=label_size, device=device, intensity=intensity
    )

    up_fields, down_fields = _label_fields(
        net, smoothed, size=size, shape=(height, width), label_size=label_size, device=device
    )

    grid = identity_grid(label_size, label_size, device)
    p_up, w_up, d_up, arrived_up = _one_way(smoothed, sdf, up_fields, range(depth), grid)
    p_down, w_down, d_down, arrived_down = _one_way(
        smoothed, sdf, down_fields, range(depth - 1, -1, -1), grid
    )
    del up_fields, down_fields
    # The annotations check the fields: a direction that does not carry one annotation onto
    # the next falls back (partly or wholly) to shape interpolation over that gap.
    pairs = list(zip(annotated, annotated[1:], strict=False))
    trust_up = _checked(p_up, w_up, arrived_up, sdf, smoothed, pairs)
    trust_down = _checked(p_down, w_down, arrived_down, sdf, smoothed, [(b, a) for a, b in pairs])

    y_up, y_down, y_fused = (np.zeros((depth, height, width), dtype=np.uint8) for _ in range(3))

    def labels_of(phi: Tensor, z: int, weights: list[tuple[float, int | None]]) -> np.ndarray:
        """Labels of slice z from signed distances; ``weights``: (weight, annotated slice) of
        the annotations it came from."""
        known = [(w, a) for w, a in weights if a is not None]
        if intensity and known:
            distance = min(abs(z - a) for _, a in known)
            phi = -_corrected_logits(
                phi, smoothed[z : z + 1], [(w, models[a]) for w, a in known], distance, scale
            )
        if (height, width) != (label_size, label_size):
            phi = F.interpolate(phi, size=(height, width), mode="bilinear", align_corners=True)
        return _labels_from_sdf(phi, palette)

    for z in range(depth):
        if z in sdf:
            y_up[z] = y_down[z] = y_fused[z] = palette[np.searchsorted(palette, mask[z])]
            continue
        up, down = p_up.get(z), p_down.get(z)
        below = z - d_up[z] if up is not None else None
        above = z + d_down[z] if down is not None else None
        if up is not None and down is not None:
            up, down = _fill_absent(up, down), _fill_absent(down, up)
        if up is not None:
            y_up[z] = labels_of(up, z, [(1.0, below)])
        if down is not None:
            y_down[z] = labels_of(down, z, [(1.0, above)])
        if up is None or down is None:
            y_fused[z] = y_up[z] if up is not None else y_down[z]
            continue
        # The nearer annotation weighs more: weight of one side = distance to the other side;
        # a side whose fields failed the annotations' check (see _checked) weighs less.
        a, b = float(d_down[z]), float(d_up[z])
        weight_up, weight_down = _side_weights(
            up, a, b, trust_up.get(z, 1.0), trust_down.get(z, 1.0)
        )
        if criteria == "ncc":
            target = smoothed[z : z + 1]
            weight_up = weight_up * _similarity_weight(w_up[z], target, reduction, ncc_window)
            weight_down = weight_down * _similarity_weight(w_down[z], target, reduction, ncc_window)
        phi = (weight_up * up + weight_down * down) / (weight_up + weight_down)
        y_fused[z] = labels_of(phi, z, [(a / (a + b), below), (b / (a + b), above)])

    return Propagation(
        _z_back(y_up, z_axis),
        _z_back(y_down, z_axis),
        _z_back(y_fused, z_axis),
        annotated,
        values,
        time.perf_counter() - started,
        noise,
        hint_slices,
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


def sdf_interpolation_labels(mask: np.ndarray, z_axis: int = 0) -> np.ndarray:
    """The shape-interpolation baseline: each label's signed distance map is interpolated
    linearly between the two annotated slices around every slice (outside the annotated range,
    the nearest annotated slice is copied); a voxel takes the label of the most negative
    distance, background where none is negative."""
    annotated = annotated_slices(mask, z_axis)
    if not annotated:
        raise LabelPropError("no annotated slice")
    vol = np.moveaxis(np.asarray(mask), z_axis, 0)
    values = [int(v) for v in np.unique(vol[annotated]) if v != 0]
    palette = np.array([0, *values], dtype=vol.dtype)
    out = np.zeros_like(vol)
    maps = {z: np.stack([signed_distance(vol[z] == v) for v in values]) for z in annotated}
    for z in range(vol.shape[0]):
        if z in maps:
            out[z] = vol[z]
            continue
        below = [a for a in annotated if a < z]
        above = [b for b in annotated if b > z]
        if not below or not above:
            out[z] = vol[below[-1] if below else above[0]]
            continue
        a, b = below[-1], above[0]
        t = (z - a) / (b - a)
        phi = (1 - t) * maps[a] + t * maps[b]
        index = phi.argmin(axis=0)
        out[z] = np.where(phi.min(axis=0) < 0, palette[1:][index], 0)
    return np.ascontiguousarray(np.moveaxis(out, 0, z_axis))
