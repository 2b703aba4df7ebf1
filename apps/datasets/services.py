"""Writes of datasets: importers (MNIST idx, CSV, image ZIPs and folders, volumes), upload
sessions, splits and deletion.

Importers parse into a private temporary directory next to the project's datasets and rename it
into place only once everything validated, inside the transaction that creates the row: a failed
import leaves neither a Dataset row nor files behind.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import uuid
import zipfile
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from PIL import Image, UnidentifiedImageError

from apps.accounts.models import Project, User
from apps.core.conf import number_setting, setting
from apps.core.exceptions import (
    Conflict,
    Forbidden,
    InsufficientStorage,
    NotFound,
    PayloadTooLarge,
    ValidationFailed,
    disk_full,
)
from apps.core.locks import alive
from apps.core.safeio import (
    NPY_MAX_HEADER,
    ArrayLimits,
    copy_bounded,
    load_npy,
    load_npz,
    memory_guard,
    open_image,
    too_large,
    writable_npy,
    zip_entry_count,
)
from apps.core.storage import project_local_dir
from apps.datasets import idx
from apps.datasets.models import Dataset, DatasetItem, Split, UploadSession
from apps.datasets.splitting import split_assign, validate_ratios, validate_seed

STUDIO_DATASET_NAME = "images"
_CHUNK = 1 << 20
_ROWS_PER_CHUNK = 10_000


def zip_max_members() -> int:
    return int(setting("DATASET_ZIP_MAX_MEMBERS"))


def zip_max_bytes() -> int:
    return int(setting("DATASET_ZIP_MAX_BYTES"))


def zip_max_ratio() -> float:
    return number_setting("DATASET_ZIP_MAX_RATIO")


def max_decompressed_bytes() -> int:
    return int(setting("DATASET_MAX_DECOMPRESSED_BYTES"))


def csv_max_rows() -> int:
    return int(setting("DATASET_CSV_MAX_ROWS"))


def idx_max_bytes() -> int:
    """DATASET_IDX_MAX_BYTES: the most bytes one MNIST idx file may declare (decompressed)."""
    return int(setting("DATASET_IDX_MAX_BYTES"))


def array_limits() -> ArrayLimits:
    """Limits on the arrays of one uploaded .npy/.npz volume file (checked from the headers)."""
    return ArrayLimits(
        max_elements=int(setting("DATASET_ARRAY_MAX_ELEMENTS")),
        max_bytes=int(setting("DATASET_ARRAY_MAX_BYTES")),
        max_members=int(setting("DATASET_NPZ_MAX_MEMBERS")),
        elements_setting="DATASET_ARRAY_MAX_ELEMENTS",
        bytes_setting="DATASET_ARRAY_MAX_BYTES",
        members_setting="DATASET_NPZ_MAX_MEMBERS",
    )


def upload_sessions_max_open() -> int:
    """UPLOAD_SESSIONS_MAX_OPEN: upload sessions one user may hold before they become data."""
    return int(setting("UPLOAD_SESSIONS_MAX_OPEN"))


# -- files ------------------------------------------------------------------------------------


def _datasets_root(project_id: str) -> Path:
    return project_local_dir(project_id, "datasets")


def _final_dir(dataset: Dataset) -> Path:
    """The dataset's directory without creating it (it appears by renaming a staging dir)."""
    return _datasets_root(dataset.project_id) / str(dataset.pk)


@contextmanager
def _staging(project_id: str) -> Iterator[Path]:
    """A private scratch directory, removed unless its content was renamed into place."""
    path = _datasets_root(project_id) / f"tmp-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _publish(staging: Path, dataset: Dataset) -> None:
    final = _final_dir(dataset)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _display_name(filename: str, limit: int = 255) -> str:
    """A user-provided file name as data: its last component, without control characters."""
    name = re.split(r"[\\/]", str(filename or ""))[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip()
    return name[:limit]


# -- parsed results ---------------------------------------------------------------------------


@dataclass
class _Parsed:
    num_samples: int
    input_shape: list[int]
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)
    label_shape: list[int] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


def _save_float32(path: Path, source: np.ndarray, shape: tuple[int, ...], scale=None) -> None:
    """Write `source` as float32 .npy in chunks of samples (bounded memory, no per-sample loop)."""
    out = writable_npy(path, dtype=np.float32, shape=shape)
    # 8 MiB of float32 per step; the chunk is freed before the next one is made (peak ~ 1 chunk).
    step = max(1, (8 * _CHUNK) // max(1, int(np.prod(shape[1:], dtype=np.int64)) * 4))
    for start in range(0, shape[0], step):
        chunk = np.asarray(source[start : start + step], dtype=np.float32).reshape((-1, *shape[1:]))
        if scale is not None:
            chunk *= scale
        out[start : start + step] = chunk
        del chunk
    out.flush()
    del out


def _validate_name(project: Project, name: str, *, exclude_pk=None) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationFailed.for_field("name", "must not be empty.")
    if len(name) > 200:
        raise ValidationFailed.for_field("name", "must be at most 200 characters.")
    qs = Dataset.objects.filter(project=project, name=name)
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    if qs.exists():
        raise Conflict(f"A dataset named {name!r} already exists in this project.")
    return name


def _create_ready(
    *, project: Project, actor: User, name: str, kind: str, parsed: _Parsed, staging: Path
) -> Dataset:
    """Create the row and rename the staging directory into place, atomically for the caller."""
    name = _validate_name(project, name)
    dataset = Dataset(
        project=project,
        owner=actor,
        name=name,
        kind=kind,
        status=Dataset.Status.READY,
        size_bytes=_dir_size(staging),
        **_parsed_fields(parsed),
    )
    try:
        with transaction.atomic():
            dataset.save(force_insert=True)
            _publish(staging, dataset)
    except IntegrityError:
        shutil.rmtree(_final_dir(dataset), ignore_errors=True)
        raise Conflict(f"A dataset named {name!r} already exists in this project.") from None
    except BaseException:
        shutil.rmtree(_final_dir(dataset), ignore_errors=True)
        raise
    return dataset


def _parsed_fields(parsed: _Parsed) -> dict:
    return {
        "num_samples": parsed.num_samples,
        "input_shape": parsed.input_shape,
        "num_classes": parsed.num_classes,
        "class_names": parsed.class_names,
        "label_shape": parsed.label_shape,
        "metadata": parsed.metadata,
    }


# -- MNIST ------------------------------------------------------------------------------------


def _parse_mnist(images, labels, staging: Path) -> _Parsed:
    """One pass per file from the upload to the stored arrays: the images header is checked,
    then the labels are read (their count must match), then the image bytes go straight into a
    memory-mapped `inputs.npy` in the dtype they came in (native byte order; uint8 pixels stay
    uint8, a quarter of float32's bytes): `dataset_arrays` converts them to float32 on read."""
    limit, setting_name = idx_max_bytes(), "DATASET_IDX_MAX_BYTES"
    head = idx.idx_header(
        images, field="images", expect_ndim=(3,), max_bytes=limit, setting_name=setting_name
    )
    n, rows, cols = head.dims
    if n == 0:
        raise ValidationFailed.for_field("images", "the file holds no images.")
    if rows * cols == 0:
        raise ValidationFailed.for_field("images", "the images have no pixels.")

    def label_array(header: idx.IdxHeader) -> np.ndarray:
        if header.dtype.kind not in "iu":
            raise ValidationFailed.for_field(
                "labels", "labels must be integers (idx magic 0x0801)."
            )
        if header.count != n:
            raise ValidationFailed(
                f"labels: {header.count} labels for {n} images.",
                details={"labels": [f"{header.count} labels for {n} images; counts must match."]},
            )
        return np.empty(n, dtype=header.dtype.newbyteorder("="))

    y = idx.stream_idx(
        labels,
        field="labels",
        expect_ndim=(1,),
        max_bytes=limit,
        setting_name=setting_name,
        allocate=label_array,
    )
    if int(y.min()) < 0 or int(y.max()) > 255:
        raise ValidationFailed.for_field("labels", "labels must lie within 0..255.")
    source_dtype = head.dtype.newbyteorder("=")

    def inputs_file(header: idx.IdxHeader) -> np.ndarray:
        if header != head:
            raise ValidationFailed.for_field("images", "the file changed while it was read.")
        return writable_npy(staging / "inputs.npy", dtype=source_dtype, shape=(n, rows * cols))

    x = idx.stream_idx(
        images,
        field="images",
        expect_ndim=(3,),
        max_bytes=limit,
        setting_name=setting_name,
        allocate=inputs_file,
    )
    x.flush()
    del x
    np.save(staging / "labels.npy", y.astype(np.int64))
    top = int(y.max())
    num_classes = 10 if top <= 9 else top + 1
    return _Parsed(
        num_samples=int(n),
        input_shape=[int(rows * cols)],
        num_classes=num_classes,
        class_names=[str(i) for i in range(num_classes)],
        label_shape=[],
        metadata={"rows": int(rows), "cols": int(cols), "source_dtype": str(source_dtype)},
    )


def dataset_import_mnist(*, project: Project, actor: User, name: str, images, labels) -> Dataset:
    """Import an MNIST pair of idx files (raw or gzip; paths or file objects) as a dataset.

    Inputs are stored `(N, rows*cols)` in the images' own dtype (`dataset_arrays` reads them as
    float32, uint8 pixels scaled to 0..1), labels as int64.
    """
    _validate_name(project, name)
    with _staging(project.pk) as staging:
        parsed = _parse_mnist(images, labels, staging)
        return _create_ready(
            project=project,
            actor=actor,
            name=name,
            kind=Dataset.Kind.MNIST,
            parsed=parsed,
            staging=staging,
        )


# -- CSV --------------------------------------------------------------------------------------


def _parse_csv(  # noqa: C901, PLR0915
    file, label_column: str | None, input_columns: list[str] | None, staging: Path
) -> _Parsed:
    import csv

    raw = idx.materialize(
        file, staging / "table.csv", field="file", max_bytes=max_decompressed_bytes()
    )
    # Rows go to disk as float32 every _ROWS_PER_CHUNK rows, labels as codes of distinct names:
    # memory holds one chunk, the distinct labels and 8 bytes of label code per row.
    rows_path = staging / "inputs.f32"
    codes = array("q")  # per row: the index of its label in `names` (first seen first)
    names: dict[str, int] = {}
    count = 0
    try:
        with open(raw, encoding="utf-8-sig", newline="") as fh, open(rows_path, "wb") as rows_out:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ValidationFailed.for_field(
                    "file", "the file is empty (a header row is required)."
                ) from None
            if not header or any(h == "" for h in header):
                raise ValidationFailed.for_field("file", "line 1: every header cell needs a name.")
            dupes = sorted(h for h, c in Counter(header).items() if c > 1)
            if dupes:
                raise ValidationFailed.for_field(
                    "file", f"line 1: duplicate column names {', '.join(dupes)}."
                )
            if label_column is not None and label_column not in header:
                raise ValidationFailed.for_field(
                    "label_column", f"no column named {label_column!r} in the header."
                )
            if input_columns:
                unknown = [c for c in input_columns if c not in header]
                if unknown:
                    raise ValidationFailed.for_field(
                        "input_columns", f"no columns named {', '.join(map(repr, unknown))}."
                    )
                if label_column in input_columns:
                    raise ValidationFailed.for_field(
                        "input_columns", "the label column cannot also be an input."
                    )
                inputs = list(input_columns)
            else:
                inputs = [h for h in header if h != label_column]
            if not inputs:
                raise ValidationFailed.for_field("input_columns", "no input columns.")
            positions = [header.index(c) for c in inputs]
            label_pos = header.index(label_column) if label_column is not None else None
            width, limit = len(header), csv_max_rows()
            buffer: list[list[float]] = []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                line = reader.line_num
                if len(row) != width:
                    raise ValidationFailed.for_field(
                        "file", f"line {line}: expected {width} fields, found {len(row)}."
                    )
                values = []
                for pos in positions:
                    cell = row[pos]
                    try:
                        value = float(cell)
                    except ValueError:
                        raise ValidationFailed.for_field(
                            "file",
                            f"line {line}, column {header[pos]!r}: {cell[:40]!r} is not a number.",
                        ) from None
                    if not np.isfinite(value):
                        raise ValidationFailed.for_field(
                            "file", f"line {line}, column {header[pos]!r}: {cell!r} is not finite."
                        )
                    values.append(value)
                if label_pos is not None:
                    label = row[label_pos].strip()
                    if not label:
                        raise ValidationFailed.for_field(
                            "file", f"line {line}, column {label_column!r}: empty label."
                        )
                    codes.append(names.setdefault(label, len(names)))
                buffer.append(values)
                count += 1
                if count > limit:
                    raise ValidationFailed.for_field("file", f"more than {limit} data rows.")
                if len(buffer) >= _ROWS_PER_CHUNK:
                    rows_out.write(np.asarray(buffer, dtype=np.float32).tobytes())
                    buffer = []
            if buffer:
                rows_out.write(np.asarray(buffer, dtype=np.float32).tobytes())
    except UnicodeDecodeError as exc:
        raise ValidationFailed.for_field(
            "file", f"the file is not UTF-8 text ({exc.reason})."
        ) from None
    except csv.Error as exc:
        raise ValidationFailed.for_field("file", f"malformed CSV: {exc}.") from None
    if not count:
        raise ValidationFailed.for_field("file", "the file holds no data rows.")
    raw.unlink()
    columns = len(positions)
    x = writable_npy(staging / "inputs.npy", dtype=np.float32, shape=(count, columns))
    with open(rows_path, "rb") as fh:
        for start in range(0, count, _ROWS_PER_CHUNK):
            block = np.fromfile(fh, dtype=np.float32, count=_ROWS_PER_CHUNK * columns)
            x[start : start + _ROWS_PER_CHUNK] = block.reshape(-1, columns)
    x.flush()
    del x
    rows_path.unlink()
    parsed = _Parsed(
        num_samples=count,
        input_shape=[columns],
        metadata={"input_columns": inputs, "label_column": label_column},
    )
    if label_column is not None:
        distinct = np.asarray(list(names))
        try:
            indices = distinct.astype(np.int64)
            integer = bool(indices.min() >= 0)
        except ValueError:
            integer = False
        if integer:
            parsed.num_classes = int(indices.max()) + 1
            parsed.class_names = [str(i) for i in range(parsed.num_classes)]
        else:  # class names, sorted; each code becomes its name's rank
            classes = np.unique(distinct)
            indices = np.searchsorted(classes, distinct)
            parsed.class_names = [str(c) for c in classes]
            parsed.num_classes = len(classes)
        y = indices[np.frombuffer(codes, dtype=np.int64)]
        np.save(staging / "labels.npy", y.astype(np.int64))
        parsed.label_shape = []
    return parsed


def dataset_import_csv(
    *,
    project: Project,
    actor: User,
    name: str,
    file,
    label_column: str | None = None,
    input_columns: list[str] | None = None,
) -> Dataset:
    """Import a CSV table with a header row: numeric input columns and an optional class label
    column (integers are class indices, other values class names sorted alphabetically)."""
    _validate_name(project, name)
    with _staging(project.pk) as staging:
        parsed = _parse_csv(file, label_column, input_columns, staging)
        return _create_ready(
            project=project,
            actor=actor,
            name=name,
            kind=Dataset.Kind.CSV,
            parsed=parsed,
            staging=staging,
        )


# -- volumes ----------------------------------------------------------------------------------


def _load_array_file(path: Path, *, field: str, scratch: Path) -> dict[str, np.ndarray]:
    """Arrays of an .npy, .npz or (with nibabel) NIfTI file, by content, memory-mapped.

    Headers are checked against `array_limits()` before anything is decompressed or allocated
    (pickles refused); npz members are extracted into `scratch` with bounded copies."""
    limits = array_limits()
    with open(path, "rb") as fh:
        head = fh.read(352)
    if head.startswith(b"\x93NUMPY"):
        return {"": load_npy(path, field=field, limits=limits)}
    if head.startswith(b"PK\x03\x04"):
        scratch.mkdir(exist_ok=True)
        return load_npz(path, field=field, limits=limits, extract_to=scratch)
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return {"": _load_nifti(path, field=field, limits=limits)}
    raise ValidationFailed.for_field(field, "expected a .npy, .npz or NIfTI file.")


def _load_nifti(path: Path, *, field: str, limits: ArrayLimits) -> np.ndarray:
    try:
        import nibabel
    except ImportError:
        raise ValidationFailed.for_field(
            field, "NIfTI files need nibabel, which is not installed on this server."
        ) from None
    try:
        image = nibabel.load(str(path))  # lazy: reads the header only
        shape, dtype = tuple(int(d) for d in image.shape), np.dtype(image.get_data_dtype())
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise ValidationFailed.for_field(field, f"unreadable NIfTI file ({exc}).") from None
    elements = int(np.prod(shape, dtype=object))
    if elements > limits.max_elements:
        raise too_large(
            f"{field}: the NIfTI image declares {elements} elements {shape}",
            limits.elements_setting,
            limits.max_elements,
        )
    if elements * dtype.itemsize > limits.max_bytes:
        raise too_large(
            f"{field}: the NIfTI image declares {elements * dtype.itemsize} bytes",
            limits.bytes_setting,
            limits.max_bytes,
        )
    try:
        with memory_guard(field, limits.elements_setting):
            return np.asarray(image.dataobj)
    except Exception as exc:
        if isinstance(exc, PayloadTooLarge):
            raise
        raise ValidationFailed.for_field(field, f"unreadable NIfTI file ({exc}).") from None


def _pick(arrays: dict[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray | None:
    for key in keys:
        if key in arrays:
            return arrays[key]
    return None


def _materialize_array_file(source, dest: Path, *, field: str) -> Path:
    """The upload on disk (gunzipped), at most what the array limits let its arrays declare."""
    limits = array_limits()
    slack = limits.max_members * (NPY_MAX_HEADER + 4096) + (1 << 20)
    if limits.max_bytes + slack <= max_decompressed_bytes():
        limit, name = limits.max_bytes + slack, limits.bytes_setting
    else:
        limit, name = max_decompressed_bytes(), "DATASET_MAX_DECOMPRESSED_BYTES"
    return idx.materialize(source, dest, field=field, max_bytes=limit, setting_name=name)


def _save_labels(path: Path, label: np.ndarray) -> int:
    """Check label values chunk by chunk (whole, non-negative) and store them as int64;
    returns the largest label. Memory stays at one chunk whatever the volume's size."""
    out = writable_npy(path, dtype=np.int64, shape=label.shape)
    step = max(1, (8 * _CHUNK) // max(1, int(np.prod(label.shape[1:], dtype=np.int64)) * 8))
    top = 0
    for start in range(0, label.shape[0], step):
        chunk = np.asarray(label[start : start + step])
        as_int = chunk.astype(np.int64)
        if chunk.dtype.kind == "f" and not np.array_equal(as_int, chunk):
            raise ValidationFailed.for_field("labels", "label values must be whole numbers.")
        if as_int.size:
            if as_int.min() < 0:
                raise ValidationFailed.for_field("labels", "label values must not be negative.")
            top = max(top, int(as_int.max()))
        out[start : start + step] = as_int
        del chunk, as_int
    out.flush()
    del out
    return top


def _parse_volume(file, labels, staging: Path) -> _Parsed:
    scratch = staging / "extracted"
    arrays = _load_array_file(
        _materialize_array_file(file, staging / "volume.raw", field="file"),
        field="file",
        scratch=scratch,
    )
    image = _pick(arrays, ("", "image", "volume"))
    if image is None:
        raise ValidationFailed.for_field(
            "file", f"the npz needs an 'image' or 'volume' array (found {sorted(arrays)})."
        )
    label = _pick(arrays, ("label", "labels"))
    if labels is not None:
        label_arrays = _load_array_file(
            _materialize_array_file(labels, staging / "labels.raw", field="labels"),
            field="labels",
            scratch=scratch,
        )
        label = _pick(label_arrays, ("", "label", "labels"))
        if label is None:
            raise ValidationFailed.for_field("labels", "the npz needs a 'label' array.")
    if image.dtype.kind not in "biuf":
        raise ValidationFailed.for_field("file", f"unsupported dtype {image.dtype}.")
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or 0 in image.shape:
        raise ValidationFailed.for_field(
            "file", f"expected a 3D volume (D, H, W) or a stack (N, D, H, W), got {image.shape}."
        )
    if label is not None:
        if label.ndim == 3:
            label = label[None]
        if label.shape != image.shape:
            raise ValidationFailed.for_field(
                "labels", f"label shape {label.shape} does not match the image shape {image.shape}."
            )
        if label.dtype.kind not in "biuf":
            raise ValidationFailed.for_field("labels", f"unsupported dtype {label.dtype}.")
    with memory_guard("file", "DATASET_ARRAY_MAX_ELEMENTS"):
        _save_float32(staging / "inputs.npy", image, tuple(image.shape))
        parsed = _Parsed(
            num_samples=int(image.shape[0]), input_shape=list(map(int, image.shape[1:]))
        )
        if label is not None:
            top = _save_labels(staging / "labels.npy", label)
            parsed.num_classes = top + 1
            parsed.class_names = [str(i) for i in range(parsed.num_classes)]
            parsed.label_shape = list(parsed.input_shape)
    del arrays, image, label
    for leftover in ("volume.raw", "labels.raw"):
        (staging / leftover).unlink(missing_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return parsed


def dataset_import_volume(
    *, project: Project, actor: User, name: str, file, labels=None
) -> Dataset:
    """Import a 3D volume (or a stack) from .npy/.npz (NIfTI when nibabel is installed), with an
    optional label volume of the same shape (in the npz as `label`, or as a second file)."""
    _validate_name(project, name)
    with _staging(project.pk) as staging:
        parsed = _parse_volume(file, labels, staging)
        return _create_ready(
            project=project,
            actor=actor,
            name=name,
            kind=Dataset.Kind.VOLUME,
            parsed=parsed,
            staging=staging,
        )


# -- images (ZIP archives and server folders of class folders) -----------------------------


@dataclass
class _ImageEntry:
    filename: str  # "class/name.png", the path inside the class folders
    class_name: str
    source: str  # the entry's name as given, for error messages
    open: Callable[[], IO[bytes]]  # the entry's bytes, streamed (never read whole)
    size: int  # the size the entry declares; reading stops with an error past it


_DRIVE = re.compile(r"^[A-Za-z]:")
_IGNORED = ("__MACOSX",)


def _layout(paths: list[tuple[str, list[str]]]) -> list[tuple[str, str, str]]:
    """(source, parts) of files -> (source, filename, class); one top-level folder is allowed."""
    if not paths:
        raise ValidationFailed.for_field("file", "no images found.")
    tops = {parts[0] for _, parts in paths}
    strip = len(tops) == 1 and all(len(parts) == 3 for _, parts in paths)
    result = []
    for source, parts in paths:
        parts = parts[1:] if strip else parts
        if len(parts) != 2:
            raise ValidationFailed.for_field(
                "file",
                f"entry {source!r} is not inside a class folder (expected class/image files, "
                "optionally under one top-level folder).",
            )
        result.append((source, "/".join(parts), parts[0]))
    return result


def _clean_part(part: str, source: str) -> str:
    if re.search(r"[\x00-\x1f\x7f]", part):
        raise ValidationFailed.for_field("file", f"entry {source!r} has control characters.")
    return part


def _zip_entries(archive: zipfile.ZipFile) -> list[_ImageEntry]:
    """Validate every member from its declared header before anything is extracted."""
    infos = archive.infolist()
    max_members, max_bytes, max_ratio = zip_max_members(), zip_max_bytes(), zip_max_ratio()
    if len(infos) > max_members:
        raise ValidationFailed.for_field(
            "file", f"the archive has {len(infos)} entries, more than the limit of {max_members}."
        )
    total = 0
    files: list[tuple[str, list[str]]] = []
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        mode = info.external_attr >> 16
        if "\\" in name:
            raise ValidationFailed.for_field("file", f"entry {name!r} contains a backslash.")
        if name.startswith("/") or _DRIVE.match(name):
            raise ValidationFailed.for_field("file", f"entry {name!r} is an absolute path.")
        parts = [p for p in name.split("/")]
        if ".." in parts:
            raise ValidationFailed.for_field("file", f"entry {name!r} leaves the archive (..).")
        if stat.S_ISLNK(mode):
            raise ValidationFailed.for_field("file", f"entry {name!r} is a symbolic link.")
        if info.flag_bits & 0x1:
            raise ValidationFailed.for_field("file", f"entry {name!r} is encrypted.")
        if info.is_dir():
            continue
        total += info.file_size
        if total > max_bytes:
            raise ValidationFailed.for_field(
                "file", f"the archive expands to more than {max_bytes} bytes."
            )
        if info.file_size and (
            info.compress_size == 0 or info.file_size / info.compress_size > max_ratio
        ):
            raise ValidationFailed.for_field(
                "file",
                f"entry {name!r} has a compression ratio over {max_ratio} (zip bomb?).",
            )
        parts = [p for p in parts if p not in ("", ".")]
        if parts and (parts[0] in _IGNORED or parts[-1].startswith(".")):
            continue
        files.append((name, [_clean_part(p, name) for p in parts]))
        by_name[name] = info
    return [
        _ImageEntry(
            filename=f,
            class_name=c,
            source=s,
            open=lambda info=by_name[s]: archive.open(info),
            size=by_name[s].file_size,
        )
        for s, f, c in _layout(files)
    ]


def _folder_entries(root: Path) -> list[_ImageEntry]:
    """Files of a server folder of class folders; symbolic links are refused."""
    max_members, max_bytes = zip_max_members(), zip_max_bytes()
    files: list[tuple[str, list[str]]] = []
    sizes: dict[str, int] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            if full.is_symlink():
                raise ValidationFailed.for_field(
                    "path", f"{full.relative_to(root)} is a symbolic link."
                )
        dirnames[:] = [d for d in dirnames if d not in _IGNORED and not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            size = full.stat().st_size
            total += size
            if len(files) >= max_members or total > max_bytes:
                raise ValidationFailed.for_field(
                    "path", f"the folder exceeds {max_members} files or {max_bytes} bytes."
                )
            sizes[rel] = size
            files.append((rel, [_clean_part(p, rel) for p in PurePosixPath(rel).parts]))
    return [
        _ImageEntry(
            filename=f,
            class_name=c,
            source=s,
            open=lambda p=root / s: open(p, "rb"),
            size=sizes[s],
        )
        for s, f, c in _layout(files)
    ]


def _store_entry(entry: _ImageEntry, target: Path, budget: dict) -> int:
    """Stream an entry to `target` in chunks: at most what it declares and what is left of
    DATASET_ZIP_MAX_BYTES for the whole import. Returns the bytes written."""
    limit = min(entry.size, budget["left"])

    def excess() -> Exception:
        if limit < entry.size:
            return too_large(
                f"file: entry {entry.source!r} goes past the import's total",
                "DATASET_ZIP_MAX_BYTES",
                zip_max_bytes(),
            )
        return ValidationFailed.for_field(
            "file", f"entry {entry.source!r} is larger than it declares."
        )

    try:
        with entry.open() as source, open(target, "wb") as out:
            size = copy_bounded(source, out, limit=limit, on_excess=excess)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ValidationFailed.for_field(
            "file", f"entry {entry.source!r} is corrupt ({exc})."
        ) from None
    budget["left"] -= size
    return size


def _ingest_images(entries: Iterable[_ImageEntry], images_dir: Path, written: list[Path]):
    """Stream each entry to disk, verify it with Pillow (pixel count checked from the header
    first) and store it under a generated name; returns row fields."""
    images_dir.mkdir(parents=True, exist_ok=True)
    budget = {"left": zip_max_bytes()}
    rows = []
    for entry in entries:
        tmp = images_dir / f"tmp-{uuid.uuid4().hex}"
        written.append(tmp)
        size = _store_entry(entry, tmp, budget)
        what = f"file: entry {entry.source!r}"
        try:
            with open_image(tmp, what=what) as img:
                img.verify()
            with open_image(tmp, what=what) as img:
                fmt, mode, (width, height) = img.format or "", img.mode, img.size
        except (
            UnidentifiedImageError,
            OSError,
            SyntaxError,
            ValueError,
        ) as exc:
            raise ValidationFailed.for_field(
                "file",
                f"entry {entry.source!r} is not a readable image ({exc.__class__.__name__}).",
            ) from None
        ext = {"JPEG": "jpg", "TIFF": "tif"}.get(fmt, fmt.lower() or "bin")
        storage_name = f"{uuid.uuid4().hex}.{ext}"
        target = images_dir / storage_name
        os.replace(tmp, target)
        written[-1] = target
        rows.append(
            {
                "filename": entry.filename,
                "class_name": entry.class_name,
                "size": size,
                "width": width,
                "height": height,
                "mode": mode,
                "content_type": Image.MIME.get(fmt, "application/octet-stream"),
                "storage_name": storage_name,
            }
        )
    return rows


def _refresh_image_stats(dataset: Dataset) -> None:
    from django.db.models import Count, Sum

    agg = dataset.items.aggregate(n=Count("id"), size=Sum("size"))
    classes = list(
        dataset.items.order_by("class_name").values_list("class_name", flat=True).distinct()
    )
    sizes = Counter(dataset.items.values_list("mode", "height", "width"))
    dataset.num_samples = agg["n"] or 0
    dataset.size_bytes = agg["size"] or 0
    dataset.class_names = classes
    dataset.num_classes = len(classes)
    dataset.label_shape = []
    if sizes:
        (mode, h, w), _ = sizes.most_common(1)[0]
        single = {"1", "L", "I", "I;16", "F"}
        channels = 1 if all(m in single for m, _, _ in sizes) else 3
        dataset.input_shape = [channels, h, w]
    else:
        dataset.input_shape = []
    dataset.content_version = F("content_version") + 1
    dataset.save()
    dataset.refresh_from_db()


def _import_images(
    *,
    project: Project,
    actor: User,
    name: str,
    entries: list[_ImageEntry],
    dataset: Dataset | None,
) -> Dataset:
    if dataset is not None:
        if dataset.kind != Dataset.Kind.IMAGES:
            raise Conflict(f"Dataset {dataset.name!r} is not an image dataset.")
        existing = set(
            dataset.items.filter(filename__in=[e.filename for e in entries]).values_list(
                "filename", flat=True
            )
        )
        if existing:
            raise Conflict(
                f"{len(existing)} images already exist in the dataset: "
                + ", ".join(sorted(existing)[:10])
            )
    else:
        name = _validate_name(project, name)
    dupes = [f for f, c in Counter(e.filename for e in entries).items() if c > 1]
    if dupes:
        raise ValidationFailed.for_field("file", f"duplicate entries: {', '.join(dupes[:10])}.")
    written: list[Path] = []
    new_dir: Path | None = None
    try:
        with transaction.atomic():
            if dataset is None:
                dataset = Dataset(project=project, owner=actor, name=name, kind=Dataset.Kind.IMAGES)
                try:
                    with transaction.atomic():
                        dataset.save(force_insert=True)
                except IntegrityError:
                    raise Conflict(f"A dataset named {name!r} already exists.") from None
                new_dir = _final_dir(dataset)
            else:
                dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
            rows = _ingest_images(entries, dataset.storage_dir / "images", written)
            n_splits = dataset.splits.count()
            DatasetItem.objects.bulk_create(
                [
                    DatasetItem(project=project, dataset=dataset, splits=["none"] * n_splits, **r)
                    for r in rows
                ],
                batch_size=1000,
            )
            _refresh_image_stats(dataset)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if new_dir is not None:
            shutil.rmtree(new_dir, ignore_errors=True)
        raise
    return dataset


def dataset_import_images_zip(
    *,
    project: Project,
    actor: User,
    file,
    name: str = STUDIO_DATASET_NAME,
    dataset: Dataset | None = None,
) -> Dataset:
    """Import a ZIP of class folders (`class/image.png`, optionally under one top-level folder)
    into `dataset`, or into a new image dataset named `name`. Unsafe archives are refused."""
    try:
        if hasattr(file, "seek"):
            file.seek(0)
        declared = zip_entry_count(file)
        max_members = zip_max_members()
        if declared is not None and declared > max_members:
            # Refused from the end record, before the central directory is read into memory.
            raise ValidationFailed.for_field(
                "file",
                f"the archive has {declared} entries, more than the limit of {max_members}.",
            )
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ValidationFailed.for_field("file", "not a ZIP archive.") from None
    with archive:
        entries = _zip_entries(archive)
        return _import_images(
            project=project, actor=actor, name=name, entries=entries, dataset=dataset
        )


def dataset_import_images_local(
    *,
    project: Project,
    actor: User,
    path: str,
    name: str = STUDIO_DATASET_NAME,
    dataset: Dataset | None = None,
) -> Dataset:
    """Import a server folder of class folders; off unless DATASET_IMPORT_ROOTS lists roots, and
    the real path (symbolic links resolved) must lie inside one of them."""
    roots = [os.path.realpath(r) for r in setting("DATASET_IMPORT_ROOTS") or []]
    if not roots:
        raise Forbidden(
            "Importing from server folders is disabled; an operator must set "
            "DATASET_IMPORT_ROOTS to allow it."
        )
    if not isinstance(path, str) or not path or "\x00" in path or not os.path.isabs(path):
        raise ValidationFailed.for_field("path", "must be an absolute path.")
    real = os.path.realpath(path)
    if not any(os.path.commonpath([real, root]) == root for root in roots):
        raise Forbidden("The path is outside the folders this server allows importing from.")
    if not os.path.isdir(real):
        raise ValidationFailed.for_field("path", "is not a folder.")
    entries = _folder_entries(Path(real))
    return _import_images(project=project, actor=actor, name=name, entries=entries, dataset=dataset)


# -- deletion ---------------------------------------------------------------------------------


def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset with its items, splits and upload sessions, then its files."""
    directory = _final_dir(dataset)
    uploads = [u.path for u in dataset.uploads.all()]
    dataset.delete()
    shutil.rmtree(directory, ignore_errors=True)
    for path in uploads:
        path.unlink(missing_ok=True)


def dataset_discard(*, dataset: Dataset) -> None:
    """Delete a pending or failed dataset but keep its upload sessions for another attempt."""
    UploadSession.objects.filter(dataset=dataset).update(dataset=None, role="")
    directory = _final_dir(dataset)
    Dataset.objects.filter(pk=dataset.pk).delete()
    shutil.rmtree(directory, ignore_errors=True)


# -- upload sessions --------------------------------------------------------------------------


def upload_session_create(
    *, project: Project, actor: User, size: int, filename: str = ""
) -> UploadSession:
    """Open an upload of `size` bytes; the file is preallocated and filled by offset writes."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValidationFailed.for_field("size", "must be a positive integer.")
    if size > settings.UPLOAD_MAX_BYTES:
        raise PayloadTooLarge(f"Uploads are limited to {settings.UPLOAD_MAX_BYTES} bytes.")
    limit = upload_sessions_max_open()
    with transaction.atomic():
        # The user's row is locked so that concurrent opens cannot both pass the count.
        User.objects.select_for_update().filter(pk=actor.pk).first()
        held = upload_sessions_open(actor).count()
        if held >= limit:
            raise PayloadTooLarge(
                f"You already have {held} open upload sessions, the limit "
                f"UPLOAD_SESSIONS_MAX_OPEN={limit}: turn them into datasets or delete them "
                "(DELETE on the upload) first.",
                details={"limit": "UPLOAD_SESSIONS_MAX_OPEN", "max": limit},
            )
        session = UploadSession.objects.create(
            project=project, owner=actor, size=size, filename=_display_name(filename)
        )
    try:
        with open(session.path, "wb") as fh:
            fh.truncate(size)
    except BaseException:
        UploadSession.objects.filter(pk=session.pk).delete()
        session.path.unlink(missing_ok=True)
        raise
    return session


def upload_sessions_open(user: User):
    """The user's upload sessions whose file is still held: not yet part of a ready dataset
    (sessions of a ready dataset had their file removed when it was parsed)."""
    return UploadSession.objects.filter(owner=user).exclude(dataset__status=Dataset.Status.READY)


def upload_session_delete(*, session: UploadSession) -> None:
    """Delete an upload and its file; one bound to a dataset still being uploaded is kept."""
    if session.dataset_id is not None:
        status = Dataset.objects.filter(pk=session.dataset_id).values_list("status", flat=True)
        if status.first() == Dataset.Status.UPLOADING:
            raise Conflict(
                f"Upload {session.pk} belongs to a dataset being uploaded; delete the dataset."
            )
    path = session.path
    session.delete()
    path.unlink(missing_ok=True)


def _check_writable(session: UploadSession) -> None:
    """Bytes go only into an upload whose file is still waiting for them: not one that was
    already turned into a dataset (its file was parsed and removed)."""
    if session.dataset_id is not None:
        status = Dataset.objects.filter(pk=session.dataset_id).values_list("status", flat=True)
        if status.first() != Dataset.Status.UPLOADING:
            raise Conflict(
                f"Upload {session.pk} was already turned into a dataset; it takes no more bytes."
            )
    if not session.path.exists():
        raise Conflict(f"Upload {session.pk} has no file any more; open a new upload.")


def _check_range(session: UploadSession, position: int, length: int) -> None:
    if not isinstance(position, int) or position < 0:
        raise ValidationFailed.for_field("position", "must be a non-negative integer.")
    if position + length > session.size:
        raise ValidationFailed.for_field(
            "position",
            f"bytes {position}..{position + length} lie outside the declared size {session.size}.",
        )


def _record_range(session: UploadSession, start: int, end: int) -> UploadSession:
    if end <= start:
        return session
    with transaction.atomic():
        locked = UploadSession.objects.select_for_update().get(pk=session.pk)
        ranges = sorted([*map(tuple, locked.ranges), (start, end)])
        merged: list[list[int]] = []
        for lo, hi in ranges:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        locked.ranges = merged
        locked.received_bytes = sum(hi - lo for lo, hi in merged)
        locked.save(update_fields=["ranges", "received_bytes", "updated_at"])
    return locked


def upload_session_write(*, session: UploadSession, position: int, data: bytes) -> UploadSession:
    """Write one chunk at `position`; chunks may come in any order and re-sends are harmless."""
    _check_range(session, position, len(data))
    _check_writable(session)
    with open(session.path, "r+b") as fh:
        fh.seek(position)
        fh.write(data)
    return _record_range(session, position, position + len(data))


def upload_session_write_stream(
    *, session: UploadSession, position: int, stream, length: int | None = None
) -> UploadSession:
    """Write a request body at `position` chunk by chunk, never holding it whole in memory.

    A body that brings no bytes, or fewer than its declared `length`, is refused: the answer
    never says a chunk was stored when nothing was."""
    _check_range(session, position, length or 0)
    _check_writable(session)
    written = 0
    with open(session.path, "r+b") as fh:
        fh.seek(position)
        while True:
            chunk = stream.read(_CHUNK) if stream is not None else b""
            if not chunk:
                break
            _check_range(session, position, written + len(chunk))
            fh.write(chunk)
            written += len(chunk)
    if written == 0:
        raise ValidationFailed.for_field(
            "body",
            "the chunk is empty: send its bytes as the request body with a Content-Length "
            "(a body without a length is not read).",
        )
    if length and written != length:
        raise ValidationFailed.for_field(
            "body", f"the body ended after {written} of the {length} bytes it declared."
        )
    return _record_range(session, position, position + written)


def upload_session_progress(session: UploadSession) -> dict:
    """The progress answer of an upload: `{uuid, complete, received_bytes, size}`."""
    return {
        "uuid": str(session.pk),
        "complete": session.complete,
        "received_bytes": session.received_bytes,
        "size": session.size,
    }


def upload_session_finalize(*, session: UploadSession) -> UploadSession:
    """Check that every byte of an upload arrived (before it is parsed into a dataset)."""
    if not session.complete:
        raise ValidationFailed.for_field(
            "uploads",
            f"upload {session.pk} is incomplete: {session.received_bytes} of {session.size} "
            "bytes received.",
        )
    if not session.path.exists():
        raise NotFound("Upload file not found.")
    return session


_UPLOAD_ROLES = {
    Dataset.Kind.MNIST: ({"images", "labels"}, set()),
    Dataset.Kind.CSV: ({"file"}, set()),
    Dataset.Kind.VOLUME: ({"file"}, {"labels"}),
    Dataset.Kind.IMAGES: ({"file"}, set()),
}


@transaction.atomic
def dataset_create_pending(
    *,
    project: Project,
    actor: User,
    name: str,
    kind: str,
    uploads: dict[str, UploadSession],
    options: dict | None = None,
    origin: str = "",
) -> Dataset:
    """Create a dataset in status "uploading" bound to its upload sessions (per role: MNIST
    `images`+`labels`, CSV `file`, volume `file` and optional `labels`, images `file`).

    `origin="from-uploads"` marks a dataset made and finalized in one call: if that call's
    process died half-way, the dataset stays behind "uploading" with the uploads bound to it; a
    retry with the same uploads or name discards it (the uploads are kept) instead of answering
    409 for ever."""
    if kind not in _UPLOAD_ROLES:
        raise ValidationFailed.for_field("kind", f"must be one of {', '.join(_UPLOAD_ROLES)}.")
    required, optional = _UPLOAD_ROLES[kind]
    given = set(uploads)
    if not required <= given or given - required - optional:
        raise ValidationFailed.for_field(
            "uploads",
            f"a {kind} dataset needs the uploads {', '.join(sorted(required))}"
            + (f" (optionally {', '.join(sorted(optional))})" if optional else "")
            + f"; got {', '.join(sorted(given)) or 'none'}.",
        )
    sessions = list(uploads.values())
    if len({s.pk for s in sessions}) != len(sessions):
        raise ValidationFailed.for_field("uploads", "each role needs its own upload.")
    for session in sessions:
        if session.project_id != project.pk:
            raise NotFound("Upload not found.")
        session.refresh_from_db(fields=["dataset"])  # a reclaim below may have freed it
        if session.dataset_id is not None:
            _reclaim_abandoned(
                session.dataset, f"Upload {session.pk} already belongs to a dataset."
            )
    same_name = Dataset.objects.filter(project=project, name=(name or "").strip()).first()
    if same_name is not None:
        _reclaim_abandoned(same_name, None)
    name = _validate_name(project, name)
    dataset = Dataset.objects.create(
        project=project,
        owner=actor,
        name=name,
        kind=kind,
        status=Dataset.Status.UPLOADING,
        metadata={"options": options or {}, "origin": origin},
    )
    for role, session in uploads.items():
        UploadSession.objects.filter(pk=session.pk).update(dataset=dataset, role=role)
    return dataset


FROM_UPLOADS = "from-uploads"


def _finalize_lock(dataset: Dataset):
    return alive(f"dataset-finalize:{dataset.pk}")


def _reclaim_abandoned(dataset: Dataset, conflict: str | None) -> None:
    """Discard `dataset` if it is a one-call ("from-uploads") dataset whose call died before it
    finished (nobody holds its finalize lock); otherwise answer Conflict (`conflict`, or the
    name's own message when None)."""
    unfinished = dataset.status in (Dataset.Status.UPLOADING, Dataset.Status.FAILED)
    if unfinished and (dataset.metadata or {}).get("origin") == FROM_UPLOADS:
        with _finalize_lock(dataset) as free:
            if free:
                dataset_discard(dataset=dataset)
                return
        raise Conflict(f"Dataset {dataset.name!r} is still being created from its uploads.")
    if conflict is not None:
        raise Conflict(conflict)


def _mark_failed(dataset: Dataset, message: str) -> None:
    Dataset.objects.filter(pk=dataset.pk).update(status=Dataset.Status.FAILED, error=message)
    dataset.status, dataset.error = Dataset.Status.FAILED, message


def dataset_finalize_upload(*, dataset: Dataset) -> Dataset:
    """Parse the uploaded files of a pending dataset, store its arrays and mark it ready.

    On bad input the dataset is marked failed with the reason and ValidationFailed is raised
    (PayloadTooLarge for a limit); on any other error it is marked failed too.
    """
    with _finalize_lock(dataset) as mine:
        if not mine:
            raise Conflict(f"Dataset {dataset.name!r} is already being created from its uploads.")
        return _finalize_upload(dataset)


def _finalize_upload(dataset: Dataset) -> Dataset:
    if dataset.status != Dataset.Status.UPLOADING:
        raise Conflict(f"Dataset {dataset.name!r} is {dataset.status}, not uploading.")
    sessions = {s.role: s for s in dataset.uploads.all()}
    options = (dataset.metadata or {}).get("options") or {}
    try:
        for session in sessions.values():
            upload_session_finalize(session=session)
        with _staging(dataset.project_id) as staging:
            kind = dataset.kind
            if kind == Dataset.Kind.IMAGES:
                with open(sessions["file"].path, "rb") as fh:
                    imported = dataset_import_images_zip(
                        project=dataset.project, actor=dataset.owner, file=fh, dataset=dataset
                    )
                Dataset.objects.filter(pk=dataset.pk).update(status=Dataset.Status.READY, error="")
                imported.refresh_from_db()
                dataset = imported
            else:
                if kind == Dataset.Kind.MNIST:
                    parsed = _parse_mnist(sessions["images"].path, sessions["labels"].path, staging)
                elif kind == Dataset.Kind.CSV:
                    parsed = _parse_csv(
                        sessions["file"].path,
                        options.get("label_column"),
                        options.get("input_columns"),
                        staging,
                    )
                else:
                    labels = sessions.get("labels")
                    parsed = _parse_volume(
                        sessions["file"].path, labels.path if labels else None, staging
                    )
                parsed.metadata = {**parsed.metadata, "options": options}
                with transaction.atomic():
                    for key, value in _parsed_fields(parsed).items():
                        setattr(dataset, key, value)
                    dataset.size_bytes = _dir_size(staging)
                    dataset.status, dataset.error = Dataset.Status.READY, ""
                    dataset.save()
                    _publish(staging, dataset)
    except (ValidationFailed, NotFound, Conflict, PayloadTooLarge) as exc:
        _mark_failed(dataset, exc.message)
        if isinstance(exc, ValidationFailed | PayloadTooLarge):
            raise  # a limit keeps its 413 (the message names the setting)
        raise ValidationFailed(exc.message, details={"uploads": [exc.message]}) from None
    except Exception as exc:
        # Never leave the row "uploading": whatever broke, the dataset failed (the uploads are
        # kept, so the same call can be retried once there is room).
        if disk_full(exc):
            _mark_failed(dataset, InsufficientStorage.default_message)
        else:
            _mark_failed(dataset, "Internal error while parsing the uploads.")
        raise
    for session in sessions.values():
        session.path.unlink(missing_ok=True)
    return dataset


# -- splits -----------------------------------------------------------------------------------


@transaction.atomic
def split_create(*, dataset: Dataset, name: str, ratios: dict, seed: int = 0) -> Split:
    """Append a named split to an image dataset: one value per item, stratified by class."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationFailed.for_field("name", "must be 1 to 200 characters.")
    ratios = validate_ratios(ratios)
    seed = validate_seed(seed)
    dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
    if dataset.splits.filter(name=name).exists():
        raise Conflict(f"A split named {name!r} already exists.")
    items = list(dataset.items.order_by("filename").only("id", "class_name", "splits"))
    if not items:
        raise ValidationFailed.for_field("dataset", "the dataset has no images to split.")
    index = dataset.splits.count()
    values = split_assign([i.class_name for i in items], ratios, seed)
    for item, value in zip(items, values, strict=True):
        item.splits = [
            *(item.splits or [])[:index],
            *["none"] * (index - len(item.splits or [])),
            value,
        ]
    DatasetItem.objects.bulk_update(items, ["splits"], batch_size=1000)
    return Split.objects.create(
        project_id=dataset.project_id,
        dataset=dataset,
        index=index,
        name=name,
        ratios=ratios,
        seed=seed,
    )


@transaction.atomic
def split_delete(*, split: Split) -> None:
    """Remove a split: its column leaves every item and later splits move down one index."""
    dataset = Dataset.objects.select_for_update().get(pk=split.dataset_id)
    index = split.index
    items = list(dataset.items.only("id", "splits"))
    for item in items:
        item.splits = [v for i, v in enumerate(item.splits or []) if i != index]
    DatasetItem.objects.bulk_update(items, ["splits"], batch_size=1000)
    split.delete()
    for later in dataset.splits.filter(index__gt=index).order_by("index"):
        later.index -= 1
        later.save(update_fields=["index", "updated_at"])


# --- the datasets of tasks -----------------------------------------------------------------------


def dataset_check_usable(*, project: Project, dataset: Dataset) -> None:
    """A task of `project` may read `dataset`: it is the project's and it is ready."""
    if dataset.project_id != project.pk:
        raise ValidationFailed.for_field("dataset_id", "Not found in this project.")
    if dataset.status != Dataset.Status.READY:
        raise Conflict(f"Dataset {dataset.name!r} is not ready ({dataset.status}).")


def task_dataset_link(*, task, dataset: Dataset) -> None:
    """Record that `task` reads `dataset` (`selectors.task_dataset` finds it again)."""
    from apps.datasets.models import TaskDataset

    TaskDataset.objects.create(task=task, dataset=dataset)


def dataset_upload_begin(
    *, project: Project, actor: User, name: str, kind: str, sizes: dict[str, int]
) -> tuple[Dataset, dict[str, UploadSession]]:
    """Begin a dataset whose files come later (the Hanami SDK's two-step upload): a pending
    dataset with one upload session per role of the given size. Nothing is created when one step
    fails, and no session file is left behind; finish with `dataset_finalize_upload`."""
    sessions: dict[str, UploadSession] = {}
    try:
        with transaction.atomic():
            for role, size in sizes.items():
                sessions[role] = upload_session_create(
                    project=project, actor=actor, size=size, filename=f"{name}-{role}"
                )
            dataset = dataset_create_pending(
                project=project, actor=actor, name=name, kind=kind, uploads=sessions
            )
    except BaseException:
        for session in sessions.values():
            session.path.unlink(missing_ok=True)
        raise
    return dataset, sessions
