"""Object detection (rectangles) with any image classifier of Orchard, by grid cells.

An image is resized to ``grid x grid`` cells of the classifier's input size and every cell is
classified: output ``i`` is label ``i``, the last output is background. Neighbouring cells
(sharing a side) of one label make one box, the bounding rectangle of those cells, scored by their
mean probability (:func:`boxes_from_cells`). Training takes every cell of an annotated image, in
the class of the rectangle covering its centre (:func:`cell_classes`), and each annotated
rectangle's own crop (:func:`crop`), so the classifier also sees whole objects.

Boxes and rectangles are Label Studio's: ``x``, ``y``, ``width``, ``height`` in percent of the
image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["boxes_from_cells", "cell_classes", "crop", "grid_patches"]


def grid_patches(image: np.ndarray, grid: int) -> np.ndarray:
    """``(grid * grid, C, h, w)`` cells of a ``(C, grid * h, grid * w)`` image, row by row."""
    channels, height, width = image.shape
    h, w = height // grid, width // grid
    cells = image[:, : h * grid, : w * grid].reshape(channels, grid, h, grid, w)
    return np.ascontiguousarray(cells.transpose(1, 3, 0, 2, 4).reshape(grid * grid, channels, h, w))


def cell_classes(rectangles, labels: Sequence[str], grid: int) -> np.ndarray:
    """The class of every cell (row by row): the label of the smallest rectangle containing the
    cell's centre, ``len(labels)`` (background) for none. ``rectangles`` are ``(x, y, width,
    height, label)`` in percent; rectangles of unknown labels are ignored."""
    index = {label: i for i, label in enumerate(labels)}
    classes = np.full(grid * grid, len(labels), dtype=np.int64)
    areas = np.full(grid * grid, np.inf)
    for x, y, width, height, label in rectangles:
        if label not in index:
            continue
        for row in range(grid):
            cy = (row + 0.5) * 100.0 / grid
            for col in range(grid):
                cx = (col + 0.5) * 100.0 / grid
                cell = row * grid + col
                inside = x <= cx <= x + width and y <= cy <= y + height
                if inside and width * height < areas[cell]:
                    classes[cell], areas[cell] = index[label], width * height
    return classes


def crop(image: np.ndarray, rectangle, size: tuple[int, int]) -> np.ndarray | None:
    """The rectangle ``(x, y, width, height)`` (percent) of a ``(C, H, W)`` image, resampled
    (nearest) to ``size`` = ``(h, w)``; None when it covers no pixel."""
    channels, height, width = image.shape
    x, y, w, h = rectangle[:4]
    left, top = int(np.floor(x * width / 100)), int(np.floor(y * height / 100))
    right = int(np.ceil((x + w) * width / 100))
    bottom = int(np.ceil((y + h) * height / 100))
    left, top = max(0, left), max(0, top)
    right, bottom = min(width, right), min(height, bottom)
    if right <= left or bottom <= top:
        return None
    rows = np.linspace(top, bottom - 1, size[0]).round().astype(int)
    cols = np.linspace(left, right - 1, size[1]).round().astype(int)
    return image[:, rows][:, :, cols].astype(np.float32)


def boxes_from_cells(
    probabilities: np.ndarray, labels: Sequence[str], grid: int, *, min_score: float = 0.5
) -> list[dict]:
    """Boxes from per-cell class probabilities ``(grid * grid, len(labels) + 1)``: cells whose
    best class is a label with at least ``min_score``, joined with their side neighbours of the
    same label. Each box is ``{x, y, width, height, label, score}`` (percent)."""
    best = probabilities.argmax(axis=1)
    score = probabilities.max(axis=1)
    background = len(labels)
    seen = np.zeros(grid * grid, dtype=bool)
    boxes = []
    for start in range(grid * grid):
        klass = int(best[start])
        if seen[start] or klass == background or score[start] < min_score:
            continue
        stack, members = [start], []
        seen[start] = True
        while stack:
            cell = stack.pop()
            members.append(cell)
            row, col = divmod(cell, grid)
            for r, c in ((row - 1, col), (row + 1, col), (row, col - 1), (row, col + 1)):
                other = r * grid + c
                if 0 <= r < grid and 0 <= c < grid and not seen[other]:
                    if int(best[other]) == klass and score[other] >= min_score:
                        seen[other] = True
                        stack.append(other)
        rows = [m // grid for m in members]
        cols = [m % grid for m in members]
        step = 100.0 / grid
        boxes.append(
            {
                "x": min(cols) * step,
                "y": min(rows) * step,
                "width": (max(cols) - min(cols) + 1) * step,
                "height": (max(rows) - min(rows) + 1) * step,
                "label": labels[klass],
                "score": float(np.mean(score[members])),
            }
        )
    return boxes
