"""The brick graph of a cluster template (:mod:`ml.templates`): a brick at x feeds the bricks at
x+1 within the template's connection distance in y and z; which bricks input and output bricks
reach, and the parameter count of the connections."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml.templates import Brick


def grid_edges(bricks: tuple[Brick, ...], distance: int) -> list[tuple[int, int]]:
    """Every connection (src, dst): a non-output brick at x to each non-input brick at x+1 whose
    y and z are within ``distance``."""
    by_x: dict[int, list[int]] = {}
    for index, brick in enumerate(bricks):
        by_x.setdefault(brick.position[0], []).append(index)
    edges = []
    for src, brick in enumerate(bricks):
        if brick.output is not None:
            continue
        _, y, z = brick.position
        for dst in by_x.get(brick.position[0] + 1, ()):
            target = bricks[dst]
            if target.input is not None:
                continue
            if abs(target.position[1] - y) <= distance and abs(target.position[2] - z) <= distance:
                edges.append((src, dst))
    return edges


def sources(bricks: tuple[Brick, ...]) -> list[int]:
    """Indices of the input bricks."""
    return [i for i, b in enumerate(bricks) if b.input is not None]


def sinks(bricks: tuple[Brick, ...]) -> list[int]:
    """Indices of the output bricks."""
    return [i for i, b in enumerate(bricks) if b.output is not None]


def reachable(
    bricks: tuple[Brick, ...], edges: list[tuple[int, int]], start: list[int], *, reverse: bool
) -> set[int]:
    """The bricks reached from ``start`` along ``edges`` (against them with ``reverse``)."""
    adjacency: dict[int, list[int]] = {}
    for src, dst in edges:
        a, b = (dst, src) if reverse else (src, dst)
        adjacency.setdefault(a, []).append(b)
    seen = set(start)
    queue = deque(start)
    while queue:
        for nxt in adjacency.get(queue.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def parameter_count(bricks: tuple[Brick, ...], edges: list[tuple[int, int]]) -> int:
    """Weights and biases of a network with these connections (one bias per fed brick)."""
    weights = sum(bricks[s].number_of_neurons * bricks[d].number_of_neurons for s, d in edges)
    biases = sum(bricks[d].number_of_neurons for d in {d for _, d in edges})
    return weights + biases
