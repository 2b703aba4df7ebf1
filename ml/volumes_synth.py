"""A family of generated 3D volumes with known labels, for measuring label propagation
(`ml.labelprop`) against naive baselines (bench/labelprop.py, tests/mlbackend).

Every volume is (depth, size, size) along axis 0, float32 image and uint8 labels:

- ``blobs``: two ellipses (labels 1, 2) that drift across the slice, grow then shrink and turn;
- ``split``: one blob (label 1) that splits into two parts drifting apart, and a second one
  (label 2) that grows from nothing;
- ``thin``: thin structures: a ring a few pixels thick (label 1) whose radius and centre change,
  and a thin bent bar (label 2) sliding across the slice.

Motion is given in fractions of the slice per slice, so the two sizes (48x128x128 and
96x256x256) show the same anatomy at two resolutions. Images are clean intensities in 0..1
(background 0.2 with a smooth texture, objects 0.6-0.9), then optionally multiplied by a smooth
intensity bias (``bias``: relative amplitude, varying across and along the slices) and given
Gaussian noise of ``noise`` times the clean intensity range.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["SHAPES", "Case", "annotate", "cases", "make", "region_between"]

SHAPES = ("blobs", "split", "thin")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return yy.astype(np.float32) / size, xx.astype(np.float32) / size  # 0..1


def _ellipse(yy, xx, cy, cx, ry, rx, angle=0.0) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (u / max(rx, 1e-6)) ** 2 + (v / max(ry, 1e-6)) ** 2 <= 1.0


def _blobs(t: float, yy, xx, rng_phase: float) -> list[tuple[np.ndarray, int, float]]:
    grow = 0.05 * (1.0 - abs(2 * t - 1))  # grows to the middle, then shrinks
    a = _ellipse(
        yy,
        xx,
        0.38 + 0.05 * np.sin(6 * t + rng_phase),
        0.25 + 0.45 * t,
        0.10 + grow,
        0.13 + grow,
        0.8 * t,
    )
    b = _ellipse(yy, xx, 0.7 - 0.1 * t, 0.72 - 0.3 * t, 0.08 + grow, 0.11, -0.6 * t)
    return [(a, 1, 0.7), (b, 2, 0.9)]


def _split(t: float, yy, xx, rng_phase: float) -> list[tuple[np.ndarray, int, float]]:
    apart = max(0.0, t - 0.3) * 0.35
    cy = 0.4 + 0.04 * np.sin(5 * t + rng_phase)
    part = _ellipse(yy, xx, cy - apart, 0.35 + 0.1 * t, 0.1, 0.09) | _ellipse(
        yy, xx, cy + apart, 0.35 + 0.1 * t + apart / 2, 0.1 - 0.03 * t, 0.09
    )
    radius = 0.12 * max(0.0, t - 0.15)
    grown = _ellipse(yy, xx, 0.72, 0.72 - 0.1 * t, radius, radius * 1.2)
    return [(part, 1, 0.75), (grown, 2, 0.9)]


def _thin(t: float, yy, xx, rng_phase: float) -> list[tuple[np.ndarray, int, float]]:
    cy, cx = 0.45 + 0.1 * t, 0.4 + 0.08 * np.sin(4 * t + rng_phase)
    radius = 0.18 + 0.06 * np.sin(3 * t)
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    ring = np.abs(dist - radius) <= 1.6 / 128  # ~3 px thick at 128
    centre = 0.15 + 0.6 * t  # a bar sliding right, bent by a sine
    curve = centre + 0.05 * np.sin(yy * 2 * np.pi + rng_phase + 2 * t)
    bar = (np.abs(xx - curve) <= 1.5 / 128) & (yy > 0.55) & (yy < 0.95)
    return [(ring, 1, 0.75), (bar, 2, 0.9)]


_MAKERS = {"blobs": _blobs, "split": _split, "thin": _thin}


def make(
    shape: str = "blobs",
    *,
    depth: int = 48,
    size: int = 128,
    noise: float = 0.0,
    bias: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One generated volume: (image float32, labels uint8), both (depth, size, size)."""
    if shape not in _MAKERS:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    rng = np.random.default_rng(seed)
    yy, xx = _grid(size)
    phase = float(rng.uniform(0, 2 * np.pi))
    background = 0.2 + 0.05 * np.sin(xx * 2 * np.pi * 2 + phase) * np.cos(yy * 2 * np.pi * 1.5)
    img = np.empty((depth, size, size), dtype=np.float32)
    labels = np.zeros((depth, size, size), dtype=np.uint8)
    for z in range(depth):
        t = z / max(1, depth - 1)
        slice_img = background.copy()
        for inside, label, value in _MAKERS[shape](t, yy, xx, phase):
            labels[z][inside] = label
            slice_img[inside] = value
        img[z] = slice_img
    if bias:
        zz = np.linspace(0.0, 1.0, depth, dtype=np.float32)[:, None, None]
        field = 1.0 + bias * (
            (yy[None] - 0.5) * np.cos(2 * zz) + (xx[None] - 0.5) * np.sin(3 * zz + phase)
        )
        img = img * field.astype(np.float32)
    if noise:
        span = float(img.max() - img.min()) or 1.0
        img = img + rng.normal(0.0, noise * span, size=img.shape).astype(np.float32)
    return img.astype(np.float32), labels


def annotate(labels: np.ndarray, count: int) -> tuple[np.ndarray, list[int]]:
    """Keep ``count`` slices' labels, spread evenly (a margin of depth/16 at both ends, where
    a user would start and stop); the mask and the slice indices."""
    depth = labels.shape[0]
    margin = depth // 16
    slices = sorted({int(round(z)) for z in np.linspace(margin, depth - 1 - margin, count)})
    mask = np.zeros_like(labels)
    mask[slices] = labels[slices]
    return mask, slices


def region_between(shape: tuple[int, ...], annotated: list[int]) -> np.ndarray:
    """The voxels of the unannotated slices between the first and the last annotated one."""
    region = np.zeros(shape, dtype=bool)
    region[annotated[0] : annotated[-1] + 1] = True
    region[annotated] = False
    return region


@dataclass(frozen=True)
class Case:
    shape: str
    noise: float
    bias: float
    annotated: int
    depth: int
    size: int

    @property
    def name(self) -> str:
        bias = f" bias {self.bias:g}" if self.bias else ""
        return (
            f"{self.shape} {self.depth}x{self.size}x{self.size} noise {self.noise:g}{bias}, "
            f"{self.annotated} annotated"
        )


def cases(
    *,
    shapes=SHAPES,
    noises=(0.0, 0.05, 0.10, 0.20),
    biases=(0.0, 0.3),
    annotated=(2, 3, 5),
    sizes=((48, 128), (96, 256)),
) -> Iterator[Case]:
    """The family: every combination (intensity bias only at noise 0.05, where it is the
    difference that shows)."""
    for depth, size in sizes:
        for shape in shapes:
            for noise in noises:
                for bias in biases:
                    if bias and noise != 0.05:
                        continue
                    for count in annotated:
                        yield Case(shape, noise, bias, count, depth, size)
