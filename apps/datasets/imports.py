"""Writes of array datasets: the MNIST idx, CSV and volume (.npy/.npz/NIfTI) importers."""

from __future__ import annotations

import shutil
from array import array
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from apps.accounts.models import Project, User
from apps.core.exceptions import PayloadTooLarge, ValidationFailed
from apps.core.safeio import (
    NPY_MAX_HEADER,
    ArrayLimits,
    load_npy,
    load_npz,
    memory_guard,
    too_large,
    writable_npy,
)
from apps.datasets import idx, mnist
from apps.datasets.models import Dataset
from apps.datasets.storage import (
    CHUNK,
    Parsed,
    array_limits,
    create_ready,
    csv_max_rows,
    max_decompressed_bytes,
    save_float32,
    staging_dir,
    validate_name,
)

_ROWS_PER_CHUNK = 10_000


# -- MNIST ------------------------------------------------------------------------------------


def dataset_import_mnist(*, project: Project, actor: User, name: str, images, labels) -> Dataset:
    """Import an MNIST pair of idx files (raw or gzip; paths or file objects, or the pair a
    multipart request streamed within `mnist.streamed_upload`) as a dataset (see `mnist`)."""
    validate_name(project, name)
    streamed = mnist.streamed_pair(images, labels)
    # Parsed while the request arrived: its staging directory is the request's (only publishing
    # is left); else the files are parsed into a staging directory of this call.
    with nullcontext(streamed[1]) if streamed else staging_dir(project.pk) as staging:
        parsed = streamed[0] if streamed else mnist.parse_mnist(images, labels, staging)
        return create_ready(
            project=project,
            actor=actor,
            name=name,
            kind=Dataset.Kind.MNIST,
            parsed=parsed,
            staging=staging,
        )


# -- CSV --------------------------------------------------------------------------------------


def _csv_columns(
    header: list[str], label_column: str | None, input_columns: list[str] | None
) -> list[str]:
    """The input columns of a CSV header (checked); the label column is checked too."""
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
    return inputs


def _csv_values(row: list[str], positions: list[int], header: list[str], line: int) -> list[float]:
    """One data row's input cells as finite floats, or a 422 naming the line and column."""
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
    return values


class _CsvRows:
    """Streams a CSV's data rows to `rows_path` as float32, every _ROWS_PER_CHUNK rows; labels
    are kept as codes of distinct names: memory holds one chunk, the distinct labels and 8 bytes
    of label code per row."""

    def __init__(self, header: list[str], inputs: list[str], label_column: str | None) -> None:
        self.header, self.inputs, self.label_column = header, inputs, label_column
        self.positions = [header.index(c) for c in inputs]
        self.label_pos = header.index(label_column) if label_column is not None else None
        self.codes = array("q")  # per row: the index of its label in `names` (first seen first)
        self.names: dict[str, int] = {}
        self.count = 0

    def write(self, reader, rows_out) -> None:
        width, limit = len(self.header), csv_max_rows()
        buffer: list[list[float]] = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            line = reader.line_num
            if len(row) != width:
                raise ValidationFailed.for_field(
                    "file", f"line {line}: expected {width} fields, found {len(row)}."
                )
            buffer.append(_csv_values(row, self.positions, self.header, line))
            if self.label_pos is not None:
                self._label(row[self.label_pos].strip(), line)
            self.count += 1
            if self.count > limit:
                raise ValidationFailed.for_field("file", f"more than {limit} data rows.")
            if len(buffer) >= _ROWS_PER_CHUNK:
                rows_out.write(np.asarray(buffer, dtype=np.float32).tobytes())
                buffer = []
        if buffer:
            rows_out.write(np.asarray(buffer, dtype=np.float32).tobytes())

    def _label(self, label: str, line: int) -> None:
        if not label:
            raise ValidationFailed.for_field(
                "file", f"line {line}, column {self.label_column!r}: empty label."
            )
        self.codes.append(self.names.setdefault(label, len(self.names)))

    def store_labels(self, parsed: Parsed, staging: Path) -> None:
        """Integer labels (all >= 0) are class indices; other labels are class names, sorted,
        each row's code becoming its name's rank."""
        distinct = np.asarray(list(self.names))
        try:
            indices = distinct.astype(np.int64)
            integer = bool(indices.min() >= 0)
        except ValueError:
            integer = False
        if integer:
            parsed.num_classes = int(indices.max()) + 1
            parsed.class_names = [str(i) for i in range(parsed.num_classes)]
        else:
            classes = np.unique(distinct)
            indices = np.searchsorted(classes, distinct)
            parsed.class_names = [str(c) for c in classes]
            parsed.num_classes = len(classes)
        y = indices[np.frombuffer(self.codes, dtype=np.int64)]
        np.save(staging / "labels.npy", y.astype(np.int64))
        parsed.label_shape = []


def _gather_rows(rows_path: Path, dest: Path, count: int, columns: int) -> None:
    """The streamed float32 rows as one (count, columns) .npy, a chunk at a time."""
    x = writable_npy(dest, dtype=np.float32, shape=(count, columns))
    with open(rows_path, "rb") as fh:
        for start in range(0, count, _ROWS_PER_CHUNK):
            block = np.fromfile(fh, dtype=np.float32, count=_ROWS_PER_CHUNK * columns)
            x[start : start + _ROWS_PER_CHUNK] = block.reshape(-1, columns)
    del x
    rows_path.unlink()


def parse_csv(
    file, label_column: str | None, input_columns: list[str] | None, staging: Path
) -> Parsed:
    import csv

    raw = idx.materialize(
        file, staging / "table.csv", field="file", max_bytes=max_decompressed_bytes()
    )
    rows_path = staging / "inputs.f32"
    try:
        with open(raw, encoding="utf-8-sig", newline="") as fh, open(rows_path, "wb") as rows_out:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ValidationFailed.for_field(
                    "file", "the file is empty (a header row is required)."
                ) from None
            rows = _CsvRows(header, _csv_columns(header, label_column, input_columns), label_column)
            rows.write(reader, rows_out)
    except UnicodeDecodeError as exc:
        raise ValidationFailed.for_field(
            "file", f"the file is not UTF-8 text ({exc.reason})."
        ) from None
    except csv.Error as exc:
        raise ValidationFailed.for_field("file", f"malformed CSV: {exc}.") from None
    if not rows.count:
        raise ValidationFailed.for_field("file", "the file holds no data rows.")
    raw.unlink()
    _gather_rows(rows_path, staging / "inputs.npy", rows.count, len(rows.inputs))
    parsed = Parsed(
        num_samples=rows.count,
        input_shape=[len(rows.inputs)],
        metadata={"input_columns": rows.inputs, "label_column": label_column},
    )
    if label_column is not None:
        rows.store_labels(parsed, staging)
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
    validate_name(project, name)
    with staging_dir(project.pk) as staging:
        parsed = parse_csv(file, label_column, input_columns, staging)
        return create_ready(
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
    step = max(1, (8 * CHUNK) // max(1, int(np.prod(label.shape[1:], dtype=np.int64)) * 8))
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
    del out
    return top


def parse_volume(file, labels, staging: Path) -> Parsed:
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
        save_float32(staging / "inputs.npy", image, tuple(image.shape))
        parsed = Parsed(
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
    validate_name(project, name)
    with staging_dir(project.pk) as staging:
        parsed = parse_volume(file, labels, staging)
        return create_ready(
            project=project,
            actor=actor,
            name=name,
            kind=Dataset.Kind.VOLUME,
            parsed=parsed,
            staging=staging,
        )
