"""The MNIST idx format: a big-endian header (two zero bytes, a dtype code, the number of
dimensions, then one uint32 per dimension) followed by the raw array.

`read_idx` parses a file on disk with NumPy (memory-mapped, no per-sample loop); `write_idx`
writes one (tests, the demo dataset and SDK tests use it).
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from apps.core.exceptions import ValidationFailed
from apps.core.safeio import too_large

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20

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


def materialize(
    source,
    dest: Path,
    *,
    field: str,
    max_bytes: int,
    setting_name: str = "DATASET_MAX_DECOMPRESSED_BYTES",
) -> Path:
    """Copy `source` (a path or a file-like object, raw or gzip) to `dest` as raw bytes.

    Gzip is detected by its magic bytes; copying stops with a 413 naming `setting_name` past
    `max_bytes`, so a small gzip never becomes more than that on disk.
    """
    with _decoded(source, field) as stream:
        with open(dest, "wb") as out:
            _copy(stream, out, field, limit=max_bytes, setting_name=setting_name)
    return dest


def materialize_idx(source, dest: Path, *, field: str, max_bytes: int, setting_name: str) -> Path:
    """Copy an idx file (raw or gzip) to `dest`, bounded by what its header declares.

    The header is read first: a header declaring more than `max_bytes` (dimensions x item size)
    is refused (413 naming `setting_name`) before anything else is decompressed, and no more
    than the declared size is ever written; bytes past it are refused. A malformed header is
    copied as is (a few bytes) for `read_idx` to name the problem.
    """
    with _decoded(source, field) as stream:
        with open(dest, "wb") as out:
            head = _read_upto(stream, 4)
            out.write(head)
            if len(head) < 4 or head[0] or head[1] or head[2] not in DTYPES:
                return dest
            ndim = head[3]
            dims_raw = _read_upto(stream, 4 * ndim)
            out.write(dims_raw)
            if len(dims_raw) < 4 * ndim:
                return dest
            dims = struct.unpack(f">{ndim}I", dims_raw)
            data_bytes = math.prod(dims) * DTYPES[head[2]].itemsize
            declared = 4 + 4 * ndim + data_bytes
            if declared > max_bytes:
                raise too_large(
                    f"{field}: the idx header declares dimensions {list(dims)} ({declared} bytes)",
                    setting_name,
                    max_bytes,
                )
            written = _copy(stream, out, field, limit=data_bytes, setting_name=None)
            if written == data_bytes and _read_upto(stream, 1):
                raise ValidationFailed.for_field(
                    field,
                    f"the file holds more than the {declared} bytes its dimensions {list(dims)} "
                    "declare.",
                )
    return dest


_GZIP_ERRORS = (OSError, EOFError, gzip.BadGzipFile, zlib.error)


@contextmanager
def _decoded(source, field: str) -> Iterator[BinaryIO]:
    """`source` opened for reading, gunzipped when it starts with the gzip magic; gzip errors
    inside the block become ValidationFailed naming `field`."""
    fh, close = _open(source)
    try:
        head = fh.read(2)
        fh.seek(0)
        if head != GZIP_MAGIC:
            yield fh
            return
        try:
            yield gzip.GzipFile(fileobj=fh, mode="rb")
        except _GZIP_ERRORS as exc:
            raise ValidationFailed.for_field(field, f"corrupt gzip data ({exc}).") from None
    finally:
        if close:
            fh.close()


def _read_upto(stream, n: int) -> bytes:
    """Up to `n` bytes (fewer only at the end of the stream)."""
    parts, left = [], n
    while left > 0:
        data = stream.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def _copy(stream, out, field: str, *, limit: int, setting_name: str | None) -> int:
    """Copy at most `limit` bytes in chunks; with `setting_name`, more is refused (413)."""
    written = 0
    while True:
        want = min(_CHUNK, limit - written + (1 if setting_name else 0))
        if want <= 0:
            return written
        data = stream.read(want)
        if not data:
            return written
        if written + len(data) > limit:
            raise too_large(f"{field}: the decompressed file", setting_name, limit)
        out.write(data)
        written += len(data)


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
