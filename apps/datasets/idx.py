"""The MNIST idx format: a big-endian header (two zero bytes, a dtype code, the number of
dimensions, then one uint32 per dimension) followed by the raw array.

`read_idx` parses a file on disk with NumPy (memory-mapped, no per-sample loop); `write_idx`
writes one (tests, the demo dataset and SDK tests use it).
"""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from apps.core.exceptions import ValidationFailed

GZIP_MAGIC = b"\x1f\x8b"

# idx dtype codes -> big-endian NumPy dtypes
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in DTYPES.items()}


def idx_bytes(array: np.ndarray) -> bytes:
    """`array` as the bytes of an idx file (uint8 images give magic 0x0803, uint8 labels 0x0801)."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"idx cannot store dtype {array.dtype}")
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()


def write_idx(path_or_file: str | Path | BinaryIO, array: np.ndarray) -> None:
    """Write `array` as an idx file to a path or a binary file object."""
    data = idx_bytes(array)
    if isinstance(path_or_file, str | Path):
        with open(path_or_file, "wb") as fh:
            fh.write(data)
    else:
        path_or_file.write(data)


def materialize(source, dest: Path, *, field: str, max_bytes: int) -> Path:
    """Copy `source` (a path or a file-like object, raw or gzip) to `dest` as raw bytes.

    Gzip is detected by its magic bytes; decompression stops with an error past `max_bytes`.
    """
    fh, close = _open(source)
    try:
        head = fh.read(2)
        fh.seek(0)
        if head == GZIP_MAGIC:
            fh = gzip.GzipFile(fileobj=fh, mode="rb")
        written = 0
        try:
            with open(dest, "wb") as out:
                while chunk := fh.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:
                        raise ValidationFailed.for_field(
                            field, f"decompressed file exceeds {max_bytes} bytes."
                        )
                    out.write(chunk)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise ValidationFailed.for_field(field, f"corrupt gzip data ({exc}).") from None
    finally:
        if close:
            fh.close()
    return dest


def _open(source) -> tuple[BinaryIO, bool]:
    if isinstance(source, str | Path):
        return open(source, "rb"), True
    if isinstance(source, bytes | bytearray):
        return io.BytesIO(source), True
    if hasattr(source, "seek"):
        source.seek(0)
    return source, False


def read_idx(path: Path, *, field: str, expect_ndim: tuple[int, ...]) -> np.ndarray:
    """Parse a raw idx file into a memory-mapped array (native byte order is the caller's job).

    Raises ValidationFailed naming `field` for a bad magic, an unexpected number of dimensions,
    or a length that does not match the header (truncated or trailing bytes).
    """
    length = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(4)
        if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in DTYPES:
            raise ValidationFailed.for_field(
                field, f"not an idx file (bad magic number 0x{magic.hex() or '0'})."
            )
        dtype, ndim = DTYPES[magic[2]], magic[3]
        if ndim not in expect_ndim:
            raise ValidationFailed.for_field(
                field,
                f"expected {' or '.join(map(str, expect_ndim))} dimensions, the header says "
                f"{ndim} (magic 0x{magic.hex()}).",
            )
        dims_raw = fh.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise ValidationFailed.for_field(field, "truncated header.")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if length < expected:
        raise ValidationFailed.for_field(
            field,
            f"truncated file: the header declares dimensions {list(dims)} "
            f"({expected} bytes) but the file has {length} bytes.",
        )
    if length > expected:
        raise ValidationFailed.for_field(
            field,
            f"the file has {length - expected} bytes more than its dimensions {list(dims)} "
            "declare.",
        )
    if 0 in dims:
        return np.zeros(dims, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=dims)
