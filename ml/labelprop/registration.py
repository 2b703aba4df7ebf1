"""The registration half of label propagation: its configuration, the slice-to-slice
registration network and its training, preparing a volume's slices, and checkpoints.

:class:`RegistrationNet`, a small 2D U-Net, takes a pair of slices (moving, fixed) and predicts a
dense displacement field; :func:`warp` applies it. :func:`train_registration` fits it on a
volume's neighbouring slice pairs without labels; :func:`checkpoint_to_bytes` keeps it. See
:mod:`ml.labelprop` for the whole method.
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
