"""Fixtures of the datasets tests: builders of idx files, ZIPs of class folders and images."""

import gzip
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from apps.datasets.idx import idx_bytes as raw_idx_bytes


def idx_bytes(array: np.ndarray, *, gz: bool = False) -> bytes:
    data = raw_idx_bytes(array)
    return gzip.compress(data) if gz else data


def mnist_arrays(n: int = 20, rows: int = 4, cols: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def upload(name: str, data: bytes, content_type: str = "application/octet-stream"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type=content_type)


def png_bytes(size=(6, 4), color=(255, 0, 0), mode="RGB", fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt)
    return buf.getvalue()


def zip_bytes(entries: dict[str, bytes], *, symlinks: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (0o120777) << 16
            zf.writestr(info, data)
    return buf.getvalue()


def class_zip(per_class: dict[str, int], *, top: str | None = None) -> bytes:
    """A ZIP with `n` distinct small PNGs per class folder (optionally under one top folder)."""
    entries = {}
    for c, (cls, n) in enumerate(sorted(per_class.items())):
        for i in range(n):
            prefix = f"{top}/" if top else ""
            entries[f"{prefix}{cls}/img{i:03d}.png"] = png_bytes(
                size=(6 + i % 3, 4), color=(c * 40 % 256, i % 256, 7)
            )
    return zip_bytes(entries)


@pytest.fixture
def mnist_pair():
    return mnist_arrays()
