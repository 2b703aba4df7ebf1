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
over all n-grams of a batch of texts at once: the same text gives the same vector in every process and on
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
    batch: list[str] = []
    first, chars = 0, 0
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {row} is a {type(text).__name__}, not a string")
        padded = f" {normalise_text(text, lowercase=lowercase, max_chars=max_chars)} "
        batch.append(padded)
        chars += len(padded)
        if chars >= BATCH_CHARS or len(batch) * dim >= BATCH_CELLS:
            out[first : row + 1] = _bucket_sums(batch, dim, low, high)
            batch, first, chars = [], row + 1, 0
    if batch:
        out[first:] = _bucket_sums(batch, dim, low, high)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


# Texts are featurized in batches of at most this many characters and output cells: every
# n-gram of a batch is hashed in one NumPy pass (one pass per text cost ~160 us of call overhead
# per n, 0.6 ms a short text), in bounded memory.
BATCH_CHARS = 1 << 20
BATCH_CELLS = 1 << 21


def _bucket_sums(padded: list[str], dim: int, low: int, high: int) -> np.ndarray:
    """The log-scaled signed bucket sums ``(len(padded), dim)`` of padded, normalised texts:
    their code points joined, the n-grams of the join hashed at once, and those that straddle
    two texts left out."""
    lengths = np.fromiter(map(len, padded), dtype=np.int64, count=len(padded))
    codes = _code_points("".join(padded))
    row_of = np.repeat(np.arange(len(padded), dtype=np.int64), lengths)
    sums = np.zeros(len(padded) * dim, dtype=np.float64)
    for n in range(low, high + 1):
        if codes.size < n:
            break
        hashes = _ngram_hashes(codes, n)
        inside = row_of[: hashes.size] == row_of[n - 1 :]  # starts and ends in one text
        hashes, rows = hashes[inside], row_of[: inside.size][inside]
        cells = rows * dim + (hashes % np.uint64(dim)).astype(np.int64)
        signs = np.where(hashes >> np.uint64(63), -1.0, 1.0)
        sums += np.bincount(cells, weights=signs, minlength=sums.size)
    table = sums.reshape(len(padded), dim)
    return np.sign(table) * np.log1p(np.abs(table))


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
