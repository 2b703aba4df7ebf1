"""The MNIST idx format: a big-endian header (two zero bytes, a dtype code, the number of
dimensions, then one uint32 per dimension) followed by the raw array.

`stream_idx` reads one (raw or gzip, from a path or an upload) in one pass straight into an array
its caller allocates, e.g. a memory-mapped .npy; `write_idx` writes one (tests, the demo dataset
and SDK tests use it).
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass(frozen=True)
class IdxHeader:
    """What an idx file declares: its (big-endian) dtype and dimensions."""

    dtype: np.dtype
    dims: tuple[int, ...]

    @property
    def offset(self) -> int:
        return 4 + 4 * len(self.dims)

    @property
    def count(self) -> int:
        return math.prod(self.dims)

    @property
    def file_size(self) -> int:
        return self.offset + self.count * self.dtype.itemsize


def idx_header(
    source, *, field: str, expect_ndim: tuple[int, ...], max_bytes: int, setting_name: str
) -> IdxHeader:
    """The checked header of an idx file (raw or gzip; only its first bytes are decoded)."""
    with _decoded(source, field) as stream:
        return _read_header(stream, field, expect_ndim, max_bytes, setting_name)


def stream_idx(
    source,
    *,
    field: str,
    expect_ndim: tuple[int, ...],
    max_bytes: int,
    setting_name: str,
    allocate: Callable[[IdxHeader], np.ndarray],
) -> np.ndarray:
    """Read an idx file (raw or gzip) in one pass into the array `allocate(header)` gives.

    The header is checked first (magic, dimensions, `max_bytes` declared: 413 naming
    `setting_name`); `allocate` sees it before any data is decoded (to refuse it, or to reserve a
    memory-mapped file) and returns a C-contiguous array of `header.count` elements in native
    byte order. Data is read straight into that array's bytes (no intermediate copy), byte-swapped
    in place when the file's items are wider than a byte; a file shorter or longer than its
    header declares is refused, and nothing past the declared size is ever decoded but one byte.
    """
    with _decoded(source, field) as stream:
        header = _read_header(stream, field, expect_ndim, max_bytes, setting_name)
        out = allocate(header)
        raw = memoryview(out.reshape(-1).view(np.uint8))
        total = len(raw)
        got = _read_into(stream, raw)
        if got < total:
            raise _truncated(field, header, got)
        if stream.read(1):
            raise _too_long(field, header)
    return _native(out, header)


def _truncated(field: str, header: IdxHeader, got: int) -> ValidationFailed:
    return ValidationFailed.for_field(
        field,
        f"truncated file: the header declares dimensions {list(header.dims)} "
        f"({header.file_size} bytes) but the file has {header.offset + got} bytes.",
    )


def _too_long(field: str, header: IdxHeader) -> ValidationFailed:
    return ValidationFailed.for_field(
        field,
        f"the file holds more than the {header.file_size} bytes its dimensions "
        f"{list(header.dims)} declare.",
    )


def _native(out: np.ndarray, header: IdxHeader) -> np.ndarray:
    """`out` in native byte order (swapped in place when the file's items are wider than a byte
    and big-endian, as idx files are)."""
    if header.dtype.itemsize > 1 and not header.dtype.isnative:
        out.reshape(-1).byteswap(inplace=True)
    return out


class IdxFeed:
    """The push side of `stream_idx`: the bytes of an idx file (raw or gzip) given as they
    arrive (`feed`, e.g. by an upload handler), decoded and written straight into the array
    `allocate(header)` gives; `close` answers it once the file ended.

    The checks and messages are `stream_idx`'s: the header (magic, dimensions, `max_bytes`
    declared: 413 naming `setting_name`) before `allocate` is called, a file shorter or longer
    than declared, corrupt or truncated gzip. Memory: the chunk given plus at most `_CHUNK` of
    decoded bytes (gzip output is produced in bounded steps, refused as soon as it passes the
    declared size), never the whole file.
    """

    def __init__(
        self,
        *,
        field: str,
        expect_ndim: tuple[int, ...],
        max_bytes: int,
        setting_name: str,
        allocate: Callable[[IdxHeader], np.ndarray],
    ) -> None:
        self.field, self.expect_ndim = field, expect_ndim
        self.max_bytes, self.setting_name, self.allocate = max_bytes, setting_name, allocate
        self.received = 0  # bytes given (compressed when gzip)
        self.header: IdxHeader | None = None
        self.out: np.ndarray | None = None
        self._start = b""  # the first bytes, until it is known whether they are gzip
        self._gzip: bool | None = None
        self._inflate = zlib.decompressobj(31)
        self._head = bytearray()
        self._raw: memoryview | None = None
        self._written = 0

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self._gzip is None:
            self._start += data
            if len(self._start) < len(GZIP_MAGIC):
                return
            self._gzip = self._start.startswith(GZIP_MAGIC)
            data, self._start = self._start, b""
        if self._gzip:
            self._gunzip(data)
        else:
            self._take(data)

    def close(self) -> np.ndarray:
        """The filled array (byte-swapped to native order), once every check passed."""
        if self._gzip is None:  # fewer than two bytes: not gzip
            self._gzip = False
            self._take(self._start)
        if self._gzip and not self._inflate.eof:
            raise ValidationFailed.for_field(
                self.field,
                "corrupt gzip data (Compressed file ended before the end-of-stream marker was "
                "reached).",
            )
        if self.header is None or self.out is None:
            self._parse_header()  # raises: the header is incomplete
            raise AssertionError("unreachable")
        if self._written < self.header.count * self.header.dtype.itemsize:
            raise _truncated(self.field, self.header, self._written)
        self._raw = None
        return _native(self.out, self.header)

    def _gunzip(self, data: bytes) -> None:
        try:
            while data:
                if self._inflate.eof:  # another member follows, or gzip's zero padding
                    data = data.lstrip(b"\x00")
                    if not data:
                        return
                    self._inflate = zlib.decompressobj(31)
                self._take(self._inflate.decompress(data, _CHUNK))
                data = (
                    self._inflate.unused_data
                    if self._inflate.eof
                    else self._inflate.unconsumed_tail
                )
        except zlib.error as exc:
            raise ValidationFailed.for_field(self.field, f"corrupt gzip data ({exc}).") from None

    def _take(self, data: bytes) -> None:
        view = memoryview(data)
        if self.header is None and view:
            view = self._take_header(view)
        if not view:
            return
        assert self._raw is not None and self.header is not None
        end = self._written + len(view)
        if end > len(self._raw):
            raise _too_long(self.field, self.header)
        self._raw[self._written : end] = view
        self._written = end

    def _take_header(self, view: memoryview) -> memoryview:
        """Collect the header from the front of `view`; the bytes after it are returned."""
        while self.header is None and view:
            have = len(self._head)
            need = (4 if have < 4 else 4 + 4 * self._head[3]) - have
            self._head += view[:need]
            view = view[need:]
            if len(self._head) == 4 and not self._plausible():
                self._parse_header()  # raises (bad magic or dimensions)
            if len(self._head) > 4 and len(self._head) == 4 + 4 * self._head[3]:
                self.header = self._parse_header()
                self.out = self.allocate(self.header)
                self._raw = memoryview(self.out.reshape(-1).view(np.uint8))
        return view

    def _plausible(self) -> bool:
        magic = self._head
        return (
            magic[0] == 0 and magic[1] == 0 and magic[2] in DTYPES and magic[3] in self.expect_ndim
        )

    def _parse_header(self) -> IdxHeader:
        return _read_header(
            io.BytesIO(bytes(self._head)),
            self.field,
            self.expect_ndim,
            self.max_bytes,
            self.setting_name,
        )


def _read_header(
    stream, field: str, expect_ndim: tuple[int, ...], max_bytes: int, setting_name: str
) -> IdxHeader:
    magic = _read_upto(stream, 4)
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
    dims_raw = _read_upto(stream, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise ValidationFailed.for_field(field, "truncated header.")
    header = IdxHeader(dtype, struct.unpack(f">{ndim}I", dims_raw))
    if header.file_size > max_bytes:
        raise too_large(
            f"{field}: the idx header declares dimensions {list(header.dims)} "
            f"({header.file_size} bytes)",
            setting_name,
            max_bytes,
        )
    return header


def _read_into(stream, buffer: memoryview) -> int:
    """Fill `buffer` from `stream` in chunks (readinto when the stream has it); the number of
    bytes read, short only at the end of the stream."""
    readinto = getattr(stream, "readinto", None)
    position, total = 0, len(buffer)
    while position < total:
        end = min(total, position + _CHUNK)
        if readinto is not None:
            n = readinto(buffer[position:end])
        else:
            data = stream.read(end - position)
            n = len(data)
            buffer[position : position + n] = data
        if not n:
            break
        position += n
    return position


_GZIP_ERRORS = (OSError, EOFError, gzip.BadGzipFile, zlib.error)


@contextmanager
def _decoded(source, field: str) -> Iterator[BinaryIO]:
    """`source` opened for reading, gunzipped when it starts with the gzip magic; gzip errors
    inside the block become ValidationFailed naming `field`. An OSError with an errno is the
    system's (a full disk while the block writes what it decoded), not the data's: it passes."""
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
            if isinstance(exc, OSError) and exc.errno is not None:
                raise
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
