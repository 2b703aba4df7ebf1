"""Split assignment: deterministic, class-stratified train/val/test allocation (pure NumPy)."""

import numpy as np

from apps.core.exceptions import ValidationFailed

SPLIT_VALUES = ("train", "val", "test")


def validate_ratios(ratios: dict) -> dict[str, float]:
    """`{train, val, test}` each in [0, 1], summing to 1 (within 1e-6)."""
    if not isinstance(ratios, dict):
        raise ValidationFailed.for_field("ratios", "must be an object with train, val and test.")
    unknown = set(ratios) - set(SPLIT_VALUES)
    if unknown:
        raise ValidationFailed.for_field("ratios", f"unknown keys {', '.join(sorted(unknown))}.")
    out = {}
    for key in SPLIT_VALUES:
        value = ratios.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValidationFailed.for_field("ratios", f"{key} must be a number in [0, 1].")
        out[key] = float(value)
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise ValidationFailed.for_field("ratios", "train, val and test must sum to 1.")
    return out


def _allocate(n: int, ratios: dict[str, float]) -> list[int]:
    """Counts per split value that sum to exactly `n` (largest remainder rounding)."""
    raw = [n * ratios[k] for k in SPLIT_VALUES]
    counts = [int(np.floor(r + 1e-9)) for r in raw]
    order = sorted(range(3), key=lambda i: -(raw[i] - counts[i]))
    for i in order[: max(0, n - sum(counts))]:
        counts[i] += 1
    return counts


def split_assign(class_names: list[str], ratios: dict[str, float], seed: int) -> np.ndarray:
    """Assign "train"/"val"/"test" to each item, stratified by class and deterministic for a seed.

    Classes are handled in sorted order; within a class the items (in the given order) are
    permuted with `numpy.random.default_rng(seed)` and cut at the allocated counts.
    """
    labels = np.asarray(class_names, dtype=object)
    out = np.empty(len(labels), dtype=object)
    rng = np.random.default_rng(seed)
    for cls in sorted(set(class_names)):
        members = np.flatnonzero(labels == cls)
        perm = members[rng.permutation(len(members))]
        counts = _allocate(len(members), ratios)
        start = 0
        for value, count in zip(SPLIT_VALUES, counts, strict=True):
            out[perm[start : start + count]] = value
            start += count
    return out


def validate_seed(seed) -> int:
    """A seed for `numpy.random.default_rng`: a non-negative 63-bit integer."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 or seed >= 2**63:
        raise ValidationFailed.for_field("seed", "must be a non-negative integer.")
    return seed
