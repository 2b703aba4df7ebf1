"""Text featurizers: hashed character n-grams into fixed-size vectors (no vocabulary to fit).

:func:`hashed_char_ngrams` maps each text to ``dim`` float32 values that any network of
:mod:`ml.networks` with ``dim`` inputs can take (an ``mlp`` architecture, or a template whose input
brick has ``dim`` neurons):

- the text is lowercased (optional), whitespace runs become one space, and it is padded with one
  space at each end so that word starts and ends make their own n-grams;
- every character n-gram (``n`` in ``ngram_range``) is hashed into one of ``dim`` buckets with a
  sign (signed feature hashing: collisions cancel out on average instead of piling up);
- bucket sums are log-scaled (``sign(x) * log1p(|x|)``) and each row is L2-normalised.

The hash is FNV-1a over Unicode code points followed by a 64-bit finaliser, computed with NumPy
over all n-grams of a text at once: the same text gives the same vector in every process and on
every machine (Python's ``hash`` is salted per process, so it cannot be used here).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["DEFAULT_NGRAM_RANGE", "hashed_char_ngrams", "normalise_text"]

DEFAULT_NGRAM_RANGE = (1, 4)
DEFAULT_MAX_CHARS = 100_000

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str, *, lowercase: bool = True, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The text as it is featurized: truncated, whitespace collapsed, optionally lowercased."""
    text = _WHITESPACE.sub(" ", text[:max_chars]).strip()
    return text.lower() if lowercase else text


def hashed_char_ngrams(
    texts: Sequence[str],
    dim: int,
    *,
    ngram_range: tuple[int, int] = DEFAULT_NGRAM_RANGE,
    lowercase: bool = True,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> np.ndarray:
    """Feature vectors ``(len(texts), dim)`` of float32 for ``texts`` (see the module docstring).

    Raises ValueError for a non-positive ``dim``, a bad ``ngram_range`` or a non-string text.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    low, high = (int(v) for v in ngram_range)
    if not 1 <= low <= high:
        raise ValueError(
            f"ngram_range must be (low, high) with 1 <= low <= high, got {ngram_range}"
        )
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {row} is a {type(text).__name__}, not a string")
        codes = _code_points(f" {normalise_text(text, lowercase=lowercase, max_chars=max_chars)} ")
        buckets, signs = [], []
        for n in range(low, min(high, len(codes)) + 1):
            hashes = _ngram_hashes(codes, n)
            buckets.append((hashes % np.uint64(dim)).astype(np.int64))
            signs.append(np.where(hashes >> np.uint64(63), -1.0, 1.0))
        if not buckets:
            continue
        sums = np.bincount(np.concatenate(buckets), weights=np.concatenate(signs), minlength=dim)
        out[row] = np.sign(sums) * np.log1p(np.abs(sums))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def _ngram_hashes(codes: np.ndarray, n: int) -> np.ndarray:
    """One 64-bit hash per n-gram of ``codes`` (``n`` is mixed in: "ab" as a 2-gram differs
    from any 1-gram)."""
    windows = sliding_window_view(codes, n)
    with np.errstate(over="ignore"):
        h = np.full(windows.shape[0], _FNV_OFFSET ^ np.uint64(n), dtype=np.uint64)
        for k in range(n):
            h = (h ^ windows[:, k]) * _FNV_PRIME
        # splitmix64's finaliser: every input bit reaches the low bits used for the bucket.
        h ^= h >> np.uint64(33)
        h *= _MIX_1
        h ^= h >> np.uint64(33)
        h *= _MIX_2
        h ^= h >> np.uint64(33)
    return h
