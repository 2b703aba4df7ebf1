"""Named-entity recognition as token classification, for any classifier network of Orchard.

A text is cut into tokens (words, numbers, single punctuation marks) with their character
offsets; every token becomes one fixed-size feature vector (:func:`token_features`): hashed
character n-grams (``ml.text``) of the token itself, of its neighbours (marked so that they
never collide with the token's own n-grams) and of its shape (capitals, digits). A network with
``dim`` inputs and ``len(labels) + 1`` outputs classifies each token: output ``i`` is label
``i``, the last output is "outside every entity". Adjacent tokens of the same label make one
span (:func:`spans_from_tokens`); annotated spans give every token its class
(:func:`token_classes`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.text import hashed_char_ngrams

__all__ = ["Token", "spans_from_tokens", "token_classes", "token_features", "tokenize"]

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
MAX_TOKENS = 20_000  # per text: a longer text is cut (its tail gets no entities)
NEIGHBOUR_WEIGHT = 0.5
SHAPE_WEIGHT = 0.5


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int


def tokenize(text: str, *, max_tokens: int = MAX_TOKENS) -> list[Token]:
    """Tokens of ``text`` with their character offsets (``text[start:end] == token.text``)."""
    tokens = []
    for match in _TOKEN.finditer(text):
        tokens.append(Token(match.group(), match.start(), match.end()))
        if len(tokens) >= max_tokens:
            break
    return tokens


def _shape(token: str) -> str:
    shape = re.sub(r"[A-Z]", "A", token)
    shape = re.sub(r"[a-z]", "a", shape)
    shape = re.sub(r"[0-9]", "0", shape)
    return "#" + re.sub(r"(.)\1+", r"\1\1", shape)[:8]


def token_features(tokens: Sequence[Token], dim: int) -> np.ndarray:
    """``(len(tokens), dim)`` float32 features (see the module docstring); rows L2-normalised."""
    if not tokens:
        return np.zeros((0, dim), dtype=np.float32)
    words = [t.text for t in tokens]
    previous = ["\x02" + w for w in ["<s>", *words[:-1]]]
    following = ["\x03" + w for w in [*words[1:], "</s>"]]
    out = hashed_char_ngrams(words, dim)
    out += NEIGHBOUR_WEIGHT * hashed_char_ngrams(previous, dim)
    out += NEIGHBOUR_WEIGHT * hashed_char_ngrams(following, dim)
    out += SHAPE_WEIGHT * hashed_char_ngrams([_shape(w) for w in words], dim, lowercase=False)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def token_classes(tokens: Sequence[Token], spans, labels: Sequence[str]) -> np.ndarray:
    """The class of every token: the index of the label of the span that covers it (a token
    overlapping a span counts as inside it), ``len(labels)`` outside every span. ``spans`` are
    ``(start, end, label)``; spans of unknown labels are ignored."""
    index = {label: i for i, label in enumerate(labels)}
    classes = np.full(len(tokens), len(labels), dtype=np.int64)
    for start, end, label in spans:
        if label not in index:
            continue
        for i, token in enumerate(tokens):
            if token.start < end and token.end > start:
                classes[i] = index[label]
    return classes


def spans_from_tokens(
    text: str, tokens: Sequence[Token], probabilities: np.ndarray, labels: Sequence[str]
) -> list[dict]:
    """Entity spans from per-token class probabilities ``(len(tokens), len(labels) + 1)``:
    consecutive tokens of one label (only whitespace between them) make one span, scored by
    the mean probability of its tokens. Each is ``{start, end, text, label, score}``."""
    outside = len(labels)
    spans: list[dict] = []
    current: dict[str, Any] | None = None
    for token, row in zip(tokens, probabilities, strict=True):
        klass = int(row.argmax())
        if klass == outside:
            current = None
            continue
        joined = (
            current is not None
            and current["class"] == klass
            and not text[current["end"] : token.start].strip()
        )
        if joined and current is not None:
            current["end"] = token.end
            current["scores"].append(float(row[klass]))
        else:
            current = {
                "class": klass,
                "start": token.start,
                "end": token.end,
                "scores": [float(row[klass])],
            }
            spans.append(current)
    return [
        {
            "start": span["start"],
            "end": span["end"],
            "text": text[span["start"] : span["end"]],
            "label": labels[span["class"]],
            "score": float(np.mean(span["scores"])),
        }
        for span in spans
    ]
