"""Bounded decoding of user-supplied files: NumPy .npy/.npz, images and byte streams.

Every decoder here reads what a file *declares* (an npy header's shape and dtype, a zip entry's
sizes, an image's width and height) and refuses it against a limit BEFORE it decompresses or
allocates anything, then reads through a reader that never returns more than was declared, so a
file that lies about its size cannot make the server allocate or write unbounded bytes.

- `load_npz` / `load_npy`: arrays of an .npz (every member inspected first) or an .npy, in memory
  or extracted to disk and memory-mapped. Object dtypes (pickles) are refused; element counts,
  total declared bytes and member counts are limited by the caller's `ArrayLimits`, whose
  messages name the settings behind them.
- `copy_bounded`: stream a file object to disk in chunks with a running byte cap.
- `open_image`: Pillow's lazy open with the pixel count checked from the header against
  IMAGE_MAX_PIXELS (Pillow's decompression-bomb limit is set from the same setting).
- `memory_guard`: a MemoryError while decoding becomes a 413 instead of a 500.

Format errors raise ValidationFailed naming `field`; limits raise PayloadTooLarge (413) naming
the setting.
"""

from __future__ import annotations

import errno
import math
import os
import struct
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
from numpy.lib import format as npformat
from PIL import Image

from apps.core.conf import setting
from apps.core.exceptions import PayloadTooLarge, ValidationFailed

CHUNK = 1 << 20
# An npy header is at most this long (NumPy's own default for max_header_size), plus the magic
# string, version and length fields.
NPY_MAX_HEADER = 10_000
_NPY_PREFIX = 12

# IMAGE_MAX_PIXELS in processes without Django settings (the same as base.py's default): 40 megapixels holds an 8K UHD frame (7680x4320, 33 MP) and the
# frames of 36-45 MP cameras' smaller modes, while a decoded RGBA image stays at most 160 MB
# (Pillow's own default, 89.5 MP, only warns and lets a 12000x12000 image through).
IMAGE_MAX_PIXELS_DEFAULT = 40_000_000


# -- errors -------------------------------------------------------------------------------------


def too_large(what: str, setting_name: str, limit: int) -> PayloadTooLarge:
    """The 413 every limit answers: what was refused, and the setting that refused it."""
    return PayloadTooLarge(
        f"{what}: over the limit {setting_name}={limit}.",
        details={"limit": setting_name, "max": limit},
    )


@contextmanager
def memory_guard(what: str, setting_name: str | None = None) -> Iterator[None]:
    """A MemoryError inside becomes a 413 (naming the setting to lower), never a 500."""
    try:
        yield
    except MemoryError:
        hint = f" Lower {setting_name} or send a smaller file." if setting_name else ""
        raise PayloadTooLarge(
            f"{what}: the server does not have enough memory to decode this file.{hint}"
        ) from None


# -- bounded reading ----------------------------------------------------------------------------


class BoundedReader:
    """A read-only view of `raw` that returns at most `limit` bytes in total."""

    def __init__(self, raw: IO[bytes] | BoundedReader, limit: int) -> None:
        self.raw, self.left, self.count = raw, max(0, int(limit)), 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.left:
            n = self.left
        if n == 0:
            return b""
        data = self.raw.read(n)
        self.left -= len(data)
        self.count += len(data)
        return data

    def exhausted_source(self) -> bool:
        """True when `raw` holds nothing past what was read (reads one byte to find out)."""
        return self.raw.read(1) == b""


def copy_bounded(
    source: IO[bytes],
    dest: IO[bytes],
    *,
    limit: int,
    on_excess,
    chunk: int = CHUNK,
) -> int:
    """Copy `source` to `dest` in chunks; `on_excess()` (an exception) is raised as soon as more
    than `limit` bytes arrive. Returns the number of bytes copied."""
    written = 0
    while True:
        data = source.read(min(chunk, limit - written + 1))
        if not data:
            return written
        written += len(data)
        if written > limit:
            raise on_excess()
        dest.write(data)


# -- NumPy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayLimits:
    """Limits on the arrays of one file, with the names of the settings they come from."""

    max_elements: int  # per array
    max_bytes: int  # declared decompressed bytes of all arrays together
    max_members: int  # arrays in one .npz
    elements_setting: str
    bytes_setting: str
    members_setting: str
    kinds: str | None = None  # allowed dtype kinds ("biuf"), None for any non-object dtype


@dataclass(frozen=True)
class ArrayHeader:
    """What an .npy declares: its shape and dtype, and where its data starts."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.elements * self.dtype.itemsize

    @property
    def file_size(self) -> int:
        return self.data_offset + self.nbytes


def _label(name: str) -> str:
    return f"array {name!r}" if name else "the array"


def read_npy_header(
    raw: IO[bytes] | BoundedReader, *, field: str, name: str, limits: ArrayLimits
) -> ArrayHeader:
    """Parse and check an npy header from `raw` (positioned at the magic string), reading at
    most the header's bytes. Object dtypes, unknown versions and arrays over the limits are
    refused before any data is read."""
    reader = BoundedReader(raw, _NPY_PREFIX + NPY_MAX_HEADER)
    try:
        version = npformat.read_magic(reader)
        if version == (1, 0):
            shape, fortran_order, dtype = npformat.read_array_header_1_0(reader)
        elif version == (2, 0):
            shape, fortran_order, dtype = npformat.read_array_header_2_0(reader)
        else:
            raise ValueError(f"npy format version {version} is not supported")
    except (
        ValueError,
        TypeError,
        SyntaxError,
        RecursionError,
        struct.error,
        UnicodeDecodeError,
    ) as exc:
        raise ValidationFailed.for_field(
            field, f"unreadable NumPy file ({_label(name)}: {exc})."
        ) from None
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise ValidationFailed.for_field(
            field,
            f"unreadable NumPy file ({_label(name)} holds Python objects; pickles are refused).",
        )
    if dtype.subdtype is not None:  # np.save never writes one: it would add dimensions
        raise ValidationFailed.for_field(
            field, f"{_label(name)} has the unsupported sub-array dtype {dtype}."
        )
    if limits.kinds is not None and dtype.kind not in limits.kinds:
        raise ValidationFailed.for_field(
            field, f"{_label(name)} has the unsupported dtype {dtype}."
        )
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise ValidationFailed.for_field(field, f"{_label(name)} declares a bad shape {shape}.")
    header = ArrayHeader(name, tuple(shape), dtype, bool(fortran_order), reader.count)
    if header.elements > limits.max_elements:
        raise too_large(
            f"{field}: {_label(name)} declares {header.elements} elements {header.shape}",
            limits.elements_setting,
            limits.max_elements,
        )
    if header.nbytes > limits.max_bytes:
        raise too_large(
            f"{field}: {_label(name)} declares {header.nbytes} bytes",
            limits.bytes_setting,
            limits.max_bytes,
        )
    return header


def _allocate(count: int, dtype: np.dtype) -> np.ndarray:
    """The one allocation of an array's declared size (its limits were checked before)."""
    return np.empty(count, dtype=dtype)


def _fill(
    reader: BoundedReader, header: ArrayHeader, field: str, limits: ArrayLimits
) -> np.ndarray:
    """Read the array's data (exactly `nbytes`) into a new array of the declared shape."""
    with memory_guard(f"{field}: {_label(header.name)}", limits.elements_setting):
        flat = _allocate(header.elements, header.dtype)
    if header.nbytes:
        buffer = flat.view(np.uint8)
        position = 0
        while position < header.nbytes:
            data = reader.read(min(CHUNK, header.nbytes - position))
            if not data:
                raise ValidationFailed.for_field(
                    field,
                    f"unreadable NumPy file ({_label(header.name)} is truncated: "
                    f"{position} of {header.nbytes} bytes).",
                )
            buffer[position : position + len(data)] = np.frombuffer(data, dtype=np.uint8)
            position += len(data)
    if header.fortran_order:
        return flat.reshape(header.shape[::-1]).transpose()
    return flat.reshape(header.shape)


def _check_members(infos: list[zipfile.ZipInfo], field: str, limits: ArrayLimits) -> None:
    if len(infos) > limits.max_members:
        raise too_large(
            f"{field}: the npz holds {len(infos)} entries",
            limits.members_setting,
            limits.max_members,
        )
    for info in infos:
        if info.flag_bits & 0x1:
            raise ValidationFailed.for_field(field, f"npz entry {info.filename!r} is encrypted.")


def zip_entry_count(fileobj: BinaryIO) -> int | None:
    """The entry count an archive's end record declares, read without parsing the central
    directory (None when it cannot be read; zipfile then reports the archive as broken)."""
    try:
        position = fileobj.tell()
        try:
            record = zipfile._EndRecData(fileobj)  # type: ignore[attr-defined]
        finally:
            fileobj.seek(position)
    except (OSError, AttributeError, struct.error):
        return None
    return int(record[zipfile._ECD_ENTRIES_TOTAL]) if record else None  # type: ignore[attr-defined]


def open_zip(fileobj: BinaryIO, *, field: str, max_members: int, members_setting: str):
    """A ZipFile for `fileobj`, refused (413) when its end record declares more than
    `max_members` entries, before the central directory is parsed into memory."""
    if hasattr(fileobj, "seek"):
        fileobj.seek(0)
    declared = zip_entry_count(fileobj)
    if declared is not None and declared > max_members:
        raise too_large(
            f"{field}: the archive holds {declared} entries", members_setting, max_members
        )
    try:
        return zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValidationFailed.for_field(field, f"not a readable zip/npz file ({exc}).") from None


def npz_headers(
    archive: zipfile.ZipFile, *, field: str, limits: ArrayLimits
) -> list[tuple[zipfile.ZipInfo, ArrayHeader]]:
    """Every .npy member of an npz with its checked header, before any data is read.

    The member count is checked first; then each member's npy header (only its first bytes are
    decompressed), whose size (header + shape x itemsize) must equal the decompressed size its
    zip entry declares (zipfile never returns more than that, so a lying entry is refused or
    cut short, never followed), and the running total of declared bytes."""
    infos = [i for i in archive.infolist() if not i.is_dir()]
    _check_members(infos, field, limits)
    result = []
    total = 0
    for info in infos:
        if not info.filename.endswith(".npy"):
            continue  # np.load ignores them too; never read
        name = info.filename[:-4]
        try:
            with archive.open(info) as member:
                header = read_npy_header(member, field=field, name=name, limits=limits)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise ValidationFailed.for_field(
                field, f"npz entry {info.filename!r} is corrupt ({exc})."
            ) from None
        if header.file_size != info.file_size:
            raise ValidationFailed.for_field(
                field,
                f"npz entry {info.filename!r} declares {info.file_size} bytes but its npy header "
                f"declares {header.file_size}.",
            )
        total += header.nbytes
        if total > limits.max_bytes:
            raise too_large(
                f"{field}: the npz's arrays declare at least {total} bytes",
                limits.bytes_setting,
                limits.max_bytes,
            )
        result.append((info, header))
    return result


def _npz_member_error(field: str, info: zipfile.ZipInfo, exc: Exception) -> ValidationFailed:
    return ValidationFailed.for_field(field, f"npz entry {info.filename!r} is corrupt ({exc}).")


def load_npz(
    file: str | Path | BinaryIO,
    *,
    field: str,
    limits: ArrayLimits,
    extract_to: Path | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of an npz, by name. Every member is inspected (`npz_headers`) before any is
    read. With `extract_to` (a private directory) members are streamed there and memory-mapped,
    so memory stays bounded by a chunk; otherwise they are read into arrays of their declared
    size, which the limits bound."""
    fileobj: BinaryIO = open(file, "rb") if isinstance(file, str | Path) else file
    close = fileobj is not file
    try:
        archive = open_zip(
            fileobj,
            field=field,
            max_members=limits.max_members,
            members_setting=limits.members_setting,
        )
        with archive:
            members = npz_headers(archive, field=field, limits=limits)
            arrays: dict[str, np.ndarray] = {}
            for info, header in members:
                try:
                    with archive.open(info) as member:
                        if extract_to is not None:
                            path = extract_to / f"member-{uuid.uuid4().hex}.npy"
                            with open(path, "wb") as out:
                                copy_bounded(
                                    member,
                                    out,
                                    limit=header.file_size,
                                    on_excess=lambda i=info: ValidationFailed.for_field(
                                        field,
                                        f"npz entry {i.filename!r} is larger than it declares.",
                                    ),
                                )
                            arrays[header.name] = load_npy(
                                path, field=field, limits=limits, name=header.name
                            )
                        else:
                            reader = BoundedReader(member, header.file_size)
                            read_npy_header(reader, field=field, name=header.name, limits=limits)
                            arrays[header.name] = _fill(reader, header, field, limits)
                            # Reaching the end makes zipfile check the CRC.
                            if not reader.exhausted_source():
                                raise ValidationFailed.for_field(
                                    field,
                                    f"npz entry {info.filename!r} is larger than it declares.",
                                )
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                    raise _npz_member_error(field, info, exc) from None
            return arrays
    finally:
        if close:
            fileobj.close()


def load_npy(
    path: Path, *, field: str, limits: ArrayLimits, name: str = "", mmap: bool = True
) -> np.ndarray:
    """An .npy on disk, memory-mapped read-only (or read into memory), after its header was
    checked and the file's size found equal to what the header declares."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        header = read_npy_header(fh, field=field, name=name, limits=limits)
        if size != header.file_size:
            what = "truncated" if size < header.file_size else "longer than its header declares"
            raise ValidationFailed.for_field(
                field,
                f"unreadable NumPy file ({_label(name)} is {what}: {size} bytes, the header "
                f"declares {header.file_size}).",
            )
        if not mmap or header.nbytes == 0:
            return _fill(BoundedReader(fh, header.nbytes), header, field, limits)
    return np.memmap(
        path,
        dtype=header.dtype,
        mode="r",
        offset=header.data_offset,
        shape=header.shape,
        order="F" if header.fortran_order else "C",
    )


def writable_npy(path: Path, *, dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new .npy memory-mapped for writing, with its whole size reserved on disk first.

    `open_memmap` alone makes a sparse file: on a full disk (tmpfs above all) the first write to an
    unbacked page kills the process with SIGBUS instead of raising. Reserving the blocks turns that
    into ENOSPC here, which the surfaces answer as 507 with nothing half-written."""
    out = npformat.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    size = os.path.getsize(path)
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
    except OSError as exc:
        del out
        Path(path).unlink(missing_ok=True)
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without fallocate
            return npformat.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        raise
    return out


# -- images -------------------------------------------------------------------------------------


def image_max_pixels() -> int:
    """IMAGE_MAX_PIXELS: the most pixels (width x height) an image may declare."""
    return int(setting("IMAGE_MAX_PIXELS"))


def _sync_pillow_limit(limit: int) -> None:
    """Pillow's own decompression-bomb limit follows the setting (raised when the setting is
    higher, so that our check, not Pillow's, decides; never left disabled)."""
    current = Image.MAX_IMAGE_PIXELS
    if current is None or current < limit:
        Image.MAX_IMAGE_PIXELS = limit


@contextmanager
def open_image(source: Any, *, what: str) -> Iterator[Image.Image]:
    """`Image.open(source)` (lazy: only the header is read) with width x height checked against
    IMAGE_MAX_PIXELS before the caller decodes anything; too many pixels answer 413. Pillow's
    DecompressionBombError and DecompressionBombWarning count as too many pixels."""
    limit = image_max_pixels()
    _sync_pillow_limit(limit)
    try:
        img = Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise too_large(
            f"{what}: the image declares too many pixels", "IMAGE_MAX_PIXELS", limit
        ) from None
    with img:
        # Pillow only warns between its limit and twice it: this check is what refuses.
        width, height = img.size
        if width * height > limit:
            raise too_large(
                f"{what}: the image declares {width}x{height} = {width * height} pixels",
                "IMAGE_MAX_PIXELS",
                limit,
            )
        yield img


def configure_pillow() -> None:
    """Set Pillow's decompression-bomb limit from IMAGE_MAX_PIXELS (done when this module is
    imported, so that every Image.open of the process, not only ours, is bounded)."""
    try:
        Image.MAX_IMAGE_PIXELS = image_max_pixels()
    except Exception:  # settings not configured yet: the default until the first open_image
        Image.MAX_IMAGE_PIXELS = IMAGE_MAX_PIXELS_DEFAULT


configure_pillow()
