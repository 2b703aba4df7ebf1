"""Where the labelprop half keeps its files, under the project's storage prefix:

    projects/<project>/labelprop/volumes/<volume id>.npy
    projects/<project>/labelprop/sessions/<token>/{mask.npy, hints.npy, result.npz}
    projects/<project>/labelprop/checkpoints/<directory>/<checkpoint id>.safetensors

Every name comes from an id or a validated directory name (`apps.core.storage` refuses others).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib import format as npformat

from apps.clusters.runtime import atomic_write
from apps.core.storage import project_local_dir

if TYPE_CHECKING:
    from apps.mlbackend.models import LabelpropCheckpoint, LabelpropSession, LabelpropVolume

RESULT_FILE = "result.npz"
MASK_FILE = "mask.npy"
HINTS_FILE = "hints.npy"


def volume_path(volume: LabelpropVolume) -> Path:
    return project_local_dir(str(volume.project_id), "labelprop", "volumes") / f"{volume.pk}.npy"


def session_dir(session: LabelpropSession) -> Path:
    return project_local_dir(str(session.project_id), "labelprop", "sessions", str(session.pk))


def checkpoint_path(checkpoint: LabelpropCheckpoint) -> Path:
    directory = project_local_dir(
        str(checkpoint.project_id), "labelprop", "checkpoints", checkpoint.directory
    )
    return directory / f"{checkpoint.pk}.safetensors"


def save_npy(path: Path, array: np.ndarray) -> int:
    """Write one array atomically (never pickled, C order); returns the size in bytes."""
    array = np.ascontiguousarray(array)
    return save_npy_chunks(path, shape=array.shape, dtype=array.dtype, chunks=[array.reshape(-1)])


def save_npy_chunks(
    path: Path, *, shape: tuple[int, ...], dtype, chunks: Iterable[np.ndarray]
) -> int:
    """Write a C-order .npy of `shape` and `dtype` whose data is `chunks` in order, as they
    come (the array is never whole in memory here), atomically: a temporary file in the same
    directory, synced, then renamed. Returns the file's size in bytes."""
    dtype = np.dtype(dtype)
    expected = math.prod(shape) * dtype.itemsize
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            npformat.write_array_header_1_0(
                fh,
                {
                    "descr": npformat.dtype_to_descr(dtype),
                    "fortran_order": False,
                    "shape": tuple(shape),
                },
            )
            written = 0
            for chunk in chunks:
                data = np.ascontiguousarray(chunk, dtype=dtype)
                fh.write(data.reshape(-1).view(np.uint8).data)
                written += data.nbytes
            if written != expected:
                raise ValueError(f"{path.name}: {written} bytes of data, {expected} expected")
            fh.flush()
            os.fsync(fh.fileno())
            size = fh.tell()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> int:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    atomic_write(path, data)
    return len(data)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
