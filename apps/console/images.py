"""Pictures of tensor data as PNG: one sample of an MNIST/CSV dataset, and slices of a volume
with its label overlay. Each picture is bounded (MAX_SIDE) whatever the dataset holds."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

MAX_SIDE = 512  # a picture is scaled down to at most this many pixels a side
MIN_SIDE = 96  # small samples (8x8 digits) are scaled up, nearest neighbour, to this
OVERLAY = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
    ],
    dtype=np.uint8,
)


def as_picture(sample: np.ndarray) -> np.ndarray | None:
    """A 2D (H, W) or (H, W, 3) view of one sample, or None when it has no picture:
    [H, W], [C, H, W] with C 1 or 3, or a flat vector of a square length (MNIST, digits)."""
    arr = np.asarray(sample)
    if arr.ndim == 1:
        side = math.isqrt(arr.shape[0])
        if side < 2 or side * side != arr.shape[0]:
            return None
        return arr.reshape(side, side)
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[0] == 1:
        return arr[0]
    if arr.ndim == 3 and arr.shape[0] == 3:
        return np.moveaxis(arr, 0, -1)
    return None


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    arr = np.nan_to_num(np.asarray(arr, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return ((arr - lo) / (hi - lo) * 255).astype(np.uint8)


def _sized(img: Image.Image) -> Image.Image:
    w, h = img.size
    if max(w, h) > MAX_SIDE:
        scale = MAX_SIDE / max(w, h)
        return img.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.BILINEAR)
    if max(w, h) < MIN_SIDE:
        factor = max(1, MIN_SIDE // max(w, h))
        return img.resize((w * factor, h * factor), Image.NEAREST)
    return img


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _strided(arr: np.ndarray) -> np.ndarray:
    """Read at most ~2 MAX_SIDE rows/columns of a (memory-mapped) plane before decoding."""
    step = max(1, math.ceil(max(arr.shape[:2]) / (2 * MAX_SIDE)))
    return arr[::step, ::step]


def sample_png(sample: np.ndarray) -> bytes | None:
    """One sample as a grey (or RGB) PNG scaled to its own range; None when it has no picture."""
    picture = as_picture(sample)
    if picture is None:
        return None
    picture = _strided(picture)
    mode = "RGB" if picture.ndim == 3 else "L"
    return _png(_sized(Image.fromarray(_to_uint8(picture), mode)))


def slice_png(volume: np.ndarray, labels: np.ndarray | None, index: int) -> bytes:
    """Slice `index` (first axis) of a [D, H, W] volume, with the label volume's slice blended
    over it in one colour per label value (0 is background)."""
    plane = _to_uint8(_strided(np.asarray(volume[index])))
    rgb = np.repeat(plane[..., None], 3, axis=2).astype(np.float32)
    if labels is not None:
        mask = np.asarray(_strided(np.asarray(labels[index]))).astype(np.int64)
        colours = OVERLAY[np.where(mask > 0, (mask - 1) % (len(OVERLAY) - 1) + 1, 0)]
        on = (mask > 0)[..., None]
        rgb = np.where(on, rgb * 0.5 + colours * 0.5, rgb)
    return _png(_sized(Image.fromarray(rgb.astype(np.uint8), "RGB")))


def slice_indices(depth: int, count: int = 4) -> list[int]:
    """`count` evenly spread slices inside a volume of `depth` slices."""
    if depth <= 0:
        return []
    if depth <= count:
        return list(range(depth))
    return sorted({round((k + 1) * depth / (count + 1)) for k in range(count)})
