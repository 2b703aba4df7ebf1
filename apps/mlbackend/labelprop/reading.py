"""Reading a labelprop request, in the two steps `services.py` describes: its transport (`params`
a JSON object, `arrays` an npz) with `read_params`/`read_npz`, then what it asks (volume, shapes,
checkpoint, values in range) with `_plan`, which raises ValidationFailed for a request that
cannot run.

An upload of a few MB can declare GBs of arrays (zeros compress well), so arrays are read
lazily and cheapest refusal first: `read_npz` checks only the npy headers, `_plan` checks what
the headers and params say, then decompresses the labels (straight into uint8, chunk by chunk),
and the image is decompressed last, by the service, chunk by chunk into its float32 file
(`RequestArrays.image_save`): a request holds its label volumes in memory, never the image,
whatever dtypes it was sent in."""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from apps.core.conf import setting
from apps.core.exceptions import NotFound, ValidationFailed
from apps.core.safeio import (
    ArrayHeader,
    ArrayLimits,
    BoundedReader,
    npz_headers,
    open_zip,
    read_npy_header,
)
from apps.core.tenancy import ProjectAccess
from apps.mlbackend.labelprop import selectors, storage
from apps.mlbackend.models import (
    LabelpropCheckpoint,
    LabelpropSessionKind,
    LabelpropVolume,
)

DEVICES = ("cuda", "cpu")
DEFAULT_SIZE = 256
MAX_SIZE = 4096
MAX_EPOCHS = 1000
CKPT_SUFFIX = ".ckpt"
MAX_NAME_CHARS = 200  # LabelpropCheckpoint.name's max_length
MAX_PARAMS_BYTES = 64 * 1024
_DIR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DIR_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_DIR_REFUSED = (
    "Unallowed checkpoint directory: name one of the project's storage locations (a path "
    "selects the location named by its last part; letters, digits, '.', '_', '-')."
)
_HASH_RE = re.compile(r"^[0-9a-f]{32}$")
# Checkpoint names are shown comma-joined: a comma (or a control character) cannot be kept.
_NAME_FORBIDDEN = re.compile(r"[,\x00-\x1f\x7f-\x9f]")
# A lone surrogate (JSON's "\ud800" escape): no UTF-8 text, so no database row, holds it.
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUMERIC = "biuf"
# Arrays are decompressed this many bytes at a time: what a request holds besides its labels.
READ_CHUNK = 256 * 1024


def max_voxels() -> int:
    return int(setting("LABELPROP_MAX_VOXELS"))


def array_limits() -> ArrayLimits:
    """Limits on the `arrays` npz, checked from its zip entries and npy headers before anything
    is decompressed: voxels per array, bytes of all arrays, and the number of entries."""
    voxels = max_voxels()
    return ArrayLimits(
        max_elements=voxels,
        max_bytes=int(setting("LABELPROP_MAX_NPZ_BYTES")),
        max_members=int(setting("LABELPROP_NPZ_MAX_MEMBERS")),
        elements_setting="LABELPROP_MAX_VOXELS",
        bytes_setting="LABELPROP_MAX_NPZ_BYTES",
        members_setting="LABELPROP_NPZ_MAX_MEMBERS",
    )


class _NotJsonNumber(ValueError):
    """NaN, Infinity, -Infinity or a number beyond a float's range (1e999, read as inf)."""


def _constant(value: str) -> float:
    raise _NotJsonNumber(f"{value} is not a JSON number")


def _finite(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise _NotJsonNumber(f"{value} is too large a number")
    return number


def read_params(raw: bytes | str | None) -> dict[str, Any]:
    """The `params` part: a JSON object (400 otherwise). NaN and Infinity are refused: Python's
    json reads them, but they are not JSON, and no JSON column stores them."""
    if raw is None:
        raise ValidationFailed.for_field("params", "missing (a JSON part named 'params').")
    if len(raw) > MAX_PARAMS_BYTES:
        raise ValidationFailed.for_field("params", f"larger than {MAX_PARAMS_BYTES} bytes.")
    try:
        value = json.loads(
            raw.decode("utf-8") if isinstance(raw, bytes) else raw,
            parse_constant=_constant,
            parse_float=_finite,
        )
    except _NotJsonNumber as exc:
        raise ValidationFailed.for_field(
            "params", f"not valid JSON (NaN/Infinity: {exc})."
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
        raise ValidationFailed.for_field("params", "not valid JSON.") from None
    if not isinstance(value, dict):
        raise ValidationFailed.for_field("params", "must be a JSON object.")
    return value


def _allocate(count: int, dtype) -> np.ndarray:
    """The one allocation of an array's size, in the dtype the work keeps (its size was checked
    against the limits from its header)."""
    return np.empty(count, dtype=dtype)


class ArraysUnreadable(ValidationFailed):
    """An array of the `arrays` npz turned out corrupt when it was decompressed: a malformed
    request (400), like an npz whose headers are unreadable, not a request that cannot run."""


class RequestArrays:
    """The `arrays` npz of one request (`read_npz`): every member's npy header checked against
    `array_limits()`, nothing decompressed yet. An array is decompressed only when the request
    gets that far, chunk by chunk into what the work keeps: labels as uint8 (`labels`), the
    image as float32 straight into its file (`image_save`). A context manager: closes the zip."""

    def __init__(
        self,
        archive: zipfile.ZipFile,
        members: dict[str, tuple[zipfile.ZipInfo, ArrayHeader]],
        limits: ArrayLimits,
    ) -> None:
        self._archive, self._members, self._limits = archive, members, limits

    def __enter__(self) -> RequestArrays:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._archive.close()

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def header(self, name: str) -> ArrayHeader:
        """What the array declares (shape, dtype, order), read without decompressing it."""
        return self._members[name][1]

    def _chunks(self, name: str) -> Iterator[np.ndarray]:
        """The array's elements in file order, READ_CHUNK bytes at a time (1-D views)."""
        info, header = self._members[name]
        itemsize = header.dtype.itemsize
        step = max(1, READ_CHUNK // itemsize) * itemsize
        try:
            with self._archive.open(info) as member:
                reader = BoundedReader(member, header.file_size)
                read_npy_header(reader, field="arrays", name=name, limits=self._limits)
                left = header.nbytes
                while left:
                    want = min(step, left)
                    data = reader.read(want)
                    while len(data) < want and (more := reader.read(want - len(data))):
                        data += more
                    if len(data) < want:
                        raise ArraysUnreadable.for_field(
                            "arrays", f"npz entry {info.filename!r} is truncated."
                        )
                    left -= want
                    yield np.frombuffer(data, dtype=header.dtype)
                # Reaching the end makes zipfile check the CRC.
                if not reader.exhausted_source():
                    raise ArraysUnreadable.for_field(
                        "arrays", f"npz entry {info.filename!r} is larger than it declares."
                    )
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise ArraysUnreadable.for_field(
                "arrays", f"npz entry {info.filename!r} is corrupt ({exc})."
            ) from None

    def _shaped(self, flat: np.ndarray, header: ArrayHeader) -> np.ndarray:
        if header.fortran_order:
            return flat.reshape(header.shape[::-1]).transpose()
        return flat.reshape(header.shape)

    def labels(self, name: str) -> np.ndarray:
        """A label array as uint8 (integer values in 0..255, else ValidationFailed), converted
        chunk by chunk."""
        header = self.header(name)
        flat = _allocate(header.elements, np.uint8)
        position = 0
        for chunk in self._chunks(name):
            if chunk.dtype.kind == "f" and not np.all(np.mod(chunk, 1) == 0):
                raise ValidationFailed.for_field(name, "must hold integer labels.")
            if chunk.dtype != np.uint8 and chunk.size and (chunk.min() < 0 or chunk.max() > 255):
                raise ValidationFailed.for_field(name, "labels must lie in 0..255.")
            flat[position : position + chunk.size] = chunk
            position += chunk.size
        return self._shaped(flat, header)

    def _image_planes(self) -> Iterator[np.ndarray]:
        """The image as float32 in C order, in pieces: chunks as decompressed when it was sent
        in C order (nothing more is held); else, once converted whole, plane by plane."""
        header = self.header("img")
        if not header.fortran_order:
            for chunk in self._chunks("img"):
                yield chunk.astype(np.float32)
            return
        flat = _allocate(header.elements, np.float32)
        position = 0
        for chunk in self._chunks("img"):
            flat[position : position + chunk.size] = chunk
            position += chunk.size
        for plane in self._shaped(flat, header):
            yield np.ascontiguousarray(plane)

    def image_save(self, path: Path) -> tuple[str, int]:
        """Write the image at `path` as a float32 .npy (C order), converted chunk by chunk as it
        is decompressed. Answers the client's hash of it (the md5 of
        `img.astype('float32').tobytes()`) and the file's size."""
        digest = hashlib.md5()

        def hashed() -> Iterator[np.ndarray]:
            for piece in self._image_planes():
                digest.update(piece.data)
                yield piece

        size = storage.save_npy_chunks(
            path, shape=self.header("img").shape, dtype=np.float32, chunks=hashed()
        )
        return digest.hexdigest(), size


def read_npz(fileobj: IO[bytes] | None) -> RequestArrays:
    """The `arrays` part: an npz (a zip of .npy files, pickles refused). Every entry's npy
    header is checked against `array_limits()` (413 naming the setting) before anything is
    decompressed; the arrays are read later, and only as far as the request gets (see
    `RequestArrays`)."""
    if fileobj is None:
        raise ValidationFailed.for_field("arrays", "missing (an npz part named 'arrays').")
    if not hasattr(fileobj, "seek"):
        raise ValidationFailed.for_field("arrays", "must be a file part holding an npz.")
    limits = array_limits()
    try:
        fileobj.seek(0)
        if not zipfile.is_zipfile(fileobj):
            raise ValidationFailed.for_field("arrays", "not an npz file (np.savez_compressed).")
        archive = open_zip(
            fileobj,
            field="arrays",
            max_members=limits.max_members,
            members_setting=limits.members_setting,
        )
        try:
            members = npz_headers(archive, field="arrays", limits=limits)
        except BaseException:
            archive.close()
            raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, RuntimeError) as exc:
        raise ValidationFailed.for_field("arrays", f"not a readable npz file ({exc}).") from None
    return RequestArrays(archive, {h.name: (info, h) for info, h in members}, limits)


def _int(params: dict, name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationFailed.for_field(name, f"must be an integer from {low} to {high}.")
    return value


def _choice(params: dict, name: str, choices: tuple[str, ...], default: str) -> str:
    value = params.get(name, default)
    if value not in choices:
        raise ValidationFailed.for_field(name, f"must be one of {', '.join(choices)}.")
    return value


def _bool(params: dict, name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise ValidationFailed.for_field(name, "must be true or false.")
    return value


def checkpoint_name(raw: Any, *, field_name: str = "name") -> str:
    """A checkpoint's listed name, as the user gave it: the last part of a path (the client
    may send one), Unicode kept (NFC), `.ckpt` (upstream's extension) added when missing; ""
    when nothing is given. The name is only a row's field (files are named by id), so nothing
    is rewritten; refused (400) are commas (`/list_ckpts` joins names with them), control
    characters, lone surrogates (no UTF-8 text holds them: the row could not be written) and
    names longer than MAX_NAME_CHARS."""
    if not isinstance(raw, str):
        raise ValidationFailed.for_field(field_name, "must be a string.")
    base = unicodedata.normalize("NFC", raw.replace("\\", "/").rsplit("/", 1)[-1].strip())
    if base in ("", CKPT_SUFFIX):
        return ""
    if _SURROGATE.search(base):
        raise ValidationFailed.for_field(field_name, _surrogate_refused(base))
    if _NAME_FORBIDDEN.search(base):
        raise ValidationFailed.for_field(
            field_name,
            f"{base!r}: a checkpoint name may not hold commas or control characters "
            "(/list_ckpts joins the names with commas).",
        )
    if not base.endswith(CKPT_SUFFIX):
        base += CKPT_SUFFIX
    if len(base) > MAX_NAME_CHARS:
        raise ValidationFailed.for_field(
            field_name, f"a checkpoint name may be at most {MAX_NAME_CHARS} characters long."
        )
    return base


def ckpt_dir_name(raw: Any) -> str:
    """The storage location a `/set_ckpt_dir` value selects. The client sends what its user
    typed, upstream-style a server path (`/data/ckpts`, `~/label_prop_checkpoints`,
    `C:\\ckpts\\`): its last part names a location inside the project's storage (never the
    server path itself); characters other than letters, digits, '.', '_', '-' become '_'."""
    if not isinstance(raw, str):
        raise ValidationFailed.for_field("ckpt_dir", _DIR_REFUSED)
    parts = [p for p in raw.replace("\\", "/").split("/") if p.strip()]
    last = parts[-1].strip() if parts else ""
    if last.endswith(":"):  # a bare drive letter ("C:")
        last = ""
    name = _DIR_UNSAFE.sub("_", last).strip("._-")[:64] if last not in (".", "..") else ""
    if not name or not _DIR_RE.fullmatch(name) or set(name) <= {"."}:
        raise ValidationFailed.for_field("ckpt_dir", _DIR_REFUSED)
    return name


def _image_shape(arrays: RequestArrays) -> tuple[int, ...]:
    """The image's shape, from its header (the image itself is read last)."""
    if "img" not in arrays:
        raise ValidationFailed.for_field(
            "arrays", "no 'img' array, and params name no known 'hash'."
        )
    img = arrays.header("img")
    if len(img.shape) != 3 or min(img.shape) < 1:
        raise ValidationFailed.for_field("img", f"must be a 3D volume, got shape {img.shape}.")
    if img.dtype.kind not in _NUMERIC:
        raise ValidationFailed.for_field("img", f"must hold numbers, got {img.dtype}.")
    if img.elements > max_voxels():
        raise ValidationFailed.for_field(
            "img", f"has {img.elements} voxels, more than the {max_voxels()} allowed."
        )
    return img.shape


def _labels_declared(arrays: RequestArrays, name: str, shape: tuple[int, ...]) -> None:
    """A label array's shape and dtype, from its header."""
    array = arrays.header(name)
    if tuple(array.shape) != tuple(shape):
        raise ValidationFailed.for_field(
            name, f"shape {tuple(array.shape)} does not match the image's {tuple(shape)}."
        )
    if array.dtype.kind not in _NUMERIC:
        raise ValidationFailed.for_field(name, f"must hold integer labels, got {array.dtype}.")


@dataclass
class _Plan:
    """A request checked, its labels read, ready to be written. `volume` None: the image is
    still in the arrays, to be stored (or found by its hash) as it is read."""

    volume: LabelpropVolume | None
    mask: np.ndarray
    hints: np.ndarray | None
    options: dict[str, Any] = field(default_factory=dict)
    checkpoint: LabelpropCheckpoint | None = None


def _plan(access: ProjectAccess, kind: str, arrays: RequestArrays, params: dict[str, Any]) -> _Plan:
    """Check everything a request asks, cheapest first: what the headers declare and the params,
    then the labels (decompressed); the image is left in `arrays`, never decompressed for a
    request that cannot run. ValidationFailed names the first problem."""
    volume = None
    if "hash" in params:
        digest = params["hash"]
        if not isinstance(digest, str) or not _HASH_RE.fullmatch(digest.lower()):
            raise ValidationFailed.for_field("hash", "must be an md5 hex digest.")
        try:
            volume = selectors.volume_get(access=access, hash=digest)
        except NotFound:
            raise ValidationFailed.for_field(
                "hash", "unknown volume (not in /list_hash): send the image again."
            ) from None
        shape = tuple(volume.shape)
    else:
        shape = _image_shape(arrays)
    if "mask" not in arrays:
        raise ValidationFailed.for_field("arrays", "no 'mask' array.")
    _labels_declared(arrays, "mask", shape)
    if "hints" in arrays:
        _labels_declared(arrays, "hints", shape)

    options: dict[str, Any] = {
        "z_axis": _int(params, "z_axis", 0, 0, 2),
        "criteria": _choice(params, "criteria", ("distance", "ncc"), "ncc"),
        "reduction": _choice(params, "reduction", ("none", "local_mean", "mean"), "none"),
        "device": _choice(params, "device", DEVICES, "cpu"),
    }
    checkpoint = None
    if kind == LabelpropSessionKind.INFERENCE:
        options["label"] = _int(params, "label", 0, 0, 255)
        name = params.get("checkpoint", "")
        if not isinstance(name, str) or not name.strip():
            raise ValidationFailed.for_field(
                "checkpoint", "choose a checkpoint from /list_ckpts (or train one first)."
            )
        checkpoint = _checkpoint(access, name, "checkpoint")
        trained_size = (checkpoint.metadata or {}).get("size", DEFAULT_SIZE)
        options["size"] = _int(params, "shape", int(trained_size), 8, MAX_SIZE)
    else:
        options["label"] = 0
        options["size"] = _int(params, "shape", DEFAULT_SIZE, 8, MAX_SIZE)
        options["max_epochs"] = _int(params, "max_epochs", 10, 1, MAX_EPOCHS)
        options["pretraining"] = _bool(params, "pretraining", False)
        options["name"] = checkpoint_name(params.get("name", ""))
        options["directory"] = selectors.ckpt_dir(access=access)
        pretrained = params.get("pretrained_ckpt") or ""
        if not isinstance(pretrained, str):
            raise ValidationFailed.for_field("pretrained_ckpt", "must be a checkpoint name.")
        if pretrained.strip():
            checkpoint = _checkpoint(access, pretrained, "pretrained_ckpt")

    mask = arrays.labels("mask")
    if not _holds(mask, options["label"]):
        what = f"label {options['label']}" if options["label"] else "a label"
        raise ValidationFailed.for_field(
            "mask", f"no slice holds {what}: annotate at least one slice."
        )
    hints = arrays.labels("hints") if "hints" in arrays else None
    return _Plan(volume, mask, hints, options, checkpoint)


def _holds(mask: np.ndarray, label: int) -> bool:
    """Whether a slice of `mask` holds `label` (any label when 0), a plane at a time (no
    temporary of the volume's size)."""
    return any((plane == label).any() if label else plane.any() for plane in mask)


def _checkpoint(access: ProjectAccess, name: str, field_name: str) -> LabelpropCheckpoint:
    if _SURROGATE.search(name):
        raise ValidationFailed.for_field(field_name, _surrogate_refused(name))
    try:
        return selectors.checkpoint_get(access=access, name=name)
    except NotFound:
        raise ValidationFailed.for_field(
            field_name, f"no checkpoint named {name!r} in the checkpoint directory."
        ) from None


def _surrogate_refused(name: str) -> str:
    return (
        f"{name!r} holds a lone surrogate (a \\ud800-\\udfff escape without its pair), which "
        "is not Unicode text: no checkpoint can be named so."
    )
