"""The propagation half of label propagation: :func:`propagate` carries annotated slices'
signed distance maps through the registration fields (upwards, downwards, fused), checked by
the annotations and corrected by the labels' intensities. See :mod:`ml.labelprop`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ml.labelprop.registration import (
    CRITERIA,
    REDUCTIONS,
    LabelPropError,
    RegistrationNet,
    _check_axis,
    _check_volume,
    box_filter,
    identity_grid,
    local_ncc,
    prepare_slices,
    warp,
    working_size,
)

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
