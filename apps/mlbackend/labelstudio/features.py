"""Turning Label Studio task data into the bound model's inputs.

`ModelSpec.of(cluster)` reads what the cluster takes and gives: a flat input size, an image
shape `(C, H, W)` when it has one (architectures built for images, or a template whose input
size is a square, or three squares for RGB), and the number of outputs. Images are decoded with
Pillow, converted to grayscale or RGB, resized (bilinear) and scaled to [0, 1] exactly like the
image datasets of `apps.datasets`, so a model trained on an image dataset predicts on Label Studio
images unchanged. Texts go through `ml.text.hashed_char_ngrams` into the input size.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from apps.core.exceptions import ValidationFailed

MAX_IMAGE_PIXELS = 64 * 1024 * 1024


@dataclass(frozen=True)
class ModelSpec:
    """What a cluster takes (flat size, optional image shape) and how many outputs it has."""

    input_size: int
    image_shape: tuple[int, int, int] | None
    outputs: int

    @classmethod
    def of(cls, cluster) -> ModelSpec:
        config = cluster.config or {}
        shape = cluster.shape or {}
        outputs_map = shape.get("outputs") or {}
        if cluster.source != "template" and config.get("input_shape"):
            dims = [int(v) for v in config["input_shape"]]
            outputs = int(config.get("num_classes") or 0)
            size = math.prod(dims)
            if len(dims) == 3:
                image = (dims[0], dims[1], dims[2]) if dims[0] in (1, 3) else None
            elif len(dims) == 2:
                image = (1, dims[0], dims[1])
            else:
                image = _square_image(size)
            return cls(size, image, outputs)
        inputs = shape.get("inputs") or {}
        if len(inputs) != 1 or len(outputs_map) != 1:
            raise ValidationFailed.for_field(
                "cluster_id", "The model needs exactly one input and one output brick."
            )
        size = int(next(iter(inputs.values())))
        return cls(size, _square_image(size), int(next(iter(outputs_map.values()))))

    def check_fits(self, kind: str, labels) -> None:
        """ValidationFailed unless this model can serve a `kind` interface with `labels`."""
        if kind in ("ner", "detection"):
            outside = "text outside every entity" if kind == "ner" else "background"
            if self.outputs != len(labels) + 1:
                raise ValidationFailed.for_field(
                    "label_config",
                    f"The label config has {len(labels)} labels, so the model needs "
                    f"{len(labels) + 1} outputs (output i is label i, the last one is "
                    f"{outside}); it has {self.outputs}.",
                )
            if kind == "ner":
                return
        if kind != "detection" and self.outputs != len(labels):
            raise ValidationFailed.for_field(
                "label_config",
                f"The label config has {len(labels)} choices but the model has {self.outputs} "
                "outputs; they must match (output i is choice i).",
            )
        if kind in ("image", "detection") and self.image_shape is None:
            raise ValidationFailed.for_field(
                "label_config",
                f"The model takes {self.input_size} values, which is not an image "
                "(H*W grayscale or 3*H*W RGB with H = W).",
            )

    def image_batch(self, images: list[bytes]) -> np.ndarray:
        """Decoded images as `(n, C, H, W)` float32 in [0, 1]."""
        assert self.image_shape is not None
        channels, height, width = self.image_shape
        out = np.empty((len(images), channels, height, width), dtype=np.float32)
        for i, data in enumerate(images):
            out[i] = decode_image(data, channels=channels, height=height, width=width)
        return out

    def grid(self, cells: int) -> ModelSpec:
        """This model's spec for whole images of `cells` x `cells` of its inputs (detection)."""
        assert self.image_shape is not None
        channels, height, width = self.image_shape
        return dataclasses.replace(self, image_shape=(channels, height * cells, width * cells))

    def token_batch(self, tokens) -> np.ndarray:
        """Per-token features of one text's tokens (named entities), `(n, input_size)`."""
        from ml.ner import token_features

        return token_features(tokens, self.input_size)

    def text_batch(self, texts: list[str]) -> np.ndarray:
        from ml.text import hashed_char_ngrams

        return hashed_char_ngrams(texts, self.input_size)


def _square_image(size: int) -> tuple[int, int, int] | None:
    side = math.isqrt(size)
    if side * side == size and side >= 2:
        return (1, side, side)
    if size % 3 == 0:
        side = math.isqrt(size // 3)
        if side * side * 3 == size and side >= 2:
            return (3, side, side)
    return None


def decode_image(data: bytes, *, channels: int, height: int, width: int) -> np.ndarray:
    """One image as `(C, H, W)` float32 in [0, 1]; ValidationFailed for anything unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ValidationFailed(f"The image is too large ({w}x{h} pixels).")
            if img.format == "JPEG":
                img.draft("L" if channels == 1 else "RGB", (width, height))
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ValidationFailed("The task data is not a readable image.") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)
