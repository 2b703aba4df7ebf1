"""Test volumes and metrics of label propagation: :func:`make_volume`, sparse annotations, the
baselines (:func:`nearest_slice_labels`, :func:`sdf_interpolation_labels`) and :func:`dice`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml.labelprop.propagation import signed_distance
from ml.labelprop.registration import LabelPropError, annotated_slices

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
