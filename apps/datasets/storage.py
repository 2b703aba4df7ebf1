"""Files of datasets and what every importer shares: the limits, the project's datasets
directory, private staging directories renamed into place, and creating a ready row.

Importers parse into a private temporary directory next to the project's datasets and rename it
into place only once everything validated, inside the transaction that creates the row: a failed
import leaves neither a Dataset row nor files behind.

Arrays are written through the page cache, as `np.save` writes, with no msync per file (it cost
~20% of a 47 MiB MNIST upload and was never a durability promise: neither the labels nor the
directory rename were synced). Space is reserved before a memory-mapped file is written
(`writable_npy`), so a full disk is an ENOSPC answered 507, not a write fault later.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.db import IntegrityError, transaction

from apps.accounts.models import Project, User
from apps.core.conf import number_setting, setting
from apps.core.exceptions import Conflict, ValidationFailed
from apps.core.safeio import ArrayLimits, writable_npy
from apps.core.storage import project_local_dir
from apps.datasets.models import Dataset

CHUNK = 1 << 20


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


def datasets_root(project_id: str) -> Path:
    return project_local_dir(project_id, "datasets")


def final_dir(dataset: Dataset) -> Path:
    """The dataset's directory without creating it (it appears by renaming a staging dir)."""
    return datasets_root(dataset.project_id) / str(dataset.pk)


@contextmanager
def staging_dir(project_id: str) -> Iterator[Path]:
    """A private scratch directory, removed unless its content was renamed into place."""
    path = datasets_root(project_id) / f"tmp-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(staging: Path, dataset: Dataset) -> None:
    final = final_dir(dataset)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def display_name(filename: str, limit: int = 255) -> str:
    """A user-provided file name as data: its last component, without control characters."""
    name = re.split(r"[\\/]", str(filename or ""))[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip()
    return name[:limit]


# -- parsed results ---------------------------------------------------------------------------


@dataclass
class Parsed:
    num_samples: int
    input_shape: list[int]
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)
    label_shape: list[int] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


def save_float32(path: Path, source: np.ndarray, shape: tuple[int, ...], scale=None) -> None:
    """Write `source` as float32 .npy in chunks of samples (bounded memory, no per-sample loop)."""
    out = writable_npy(path, dtype=np.float32, shape=shape)
    # 8 MiB of float32 per step; the chunk is freed before the next one is made (peak ~ 1 chunk).
    step = max(1, (8 * CHUNK) // max(1, int(np.prod(shape[1:], dtype=np.int64)) * 4))
    for start in range(0, shape[0], step):
        chunk = np.asarray(source[start : start + step], dtype=np.float32).reshape((-1, *shape[1:]))
        if scale is not None:
            chunk *= scale
        out[start : start + step] = chunk
        del chunk
    del out


def validate_name(project: Project, name: str, *, exclude_pk=None) -> str:
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


def create_ready(
    *, project: Project, actor: User, name: str, kind: str, parsed: Parsed, staging: Path
) -> Dataset:
    """Create the row and rename the staging directory into place, atomically for the caller."""
    name = validate_name(project, name)
    dataset = Dataset(
        project=project,
        owner=actor,
        name=name,
        kind=kind,
        status=Dataset.Status.READY,
        size_bytes=dir_size(staging),
        **parsed_fields(parsed),
    )
    try:
        with transaction.atomic():
            dataset.save(force_insert=True)
            publish(staging, dataset)
    except IntegrityError:
        shutil.rmtree(final_dir(dataset), ignore_errors=True)
        raise Conflict(f"A dataset named {name!r} already exists in this project.") from None
    except BaseException:
        shutil.rmtree(final_dir(dataset), ignore_errors=True)
        raise
    return dataset


def parsed_fields(parsed: Parsed) -> dict:
    return {
        "num_samples": parsed.num_samples,
        "input_shape": parsed.input_shape,
        "num_classes": parsed.num_classes,
        "class_names": parsed.class_names,
        "label_shape": parsed.label_shape,
        "metadata": parsed.metadata,
    }
