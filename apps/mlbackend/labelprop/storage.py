"""Where the labelprop half keeps its files, under the project's storage prefix:

    projects/<project>/labelprop/volumes/<volume id>.npy
    projects/<project>/labelprop/sessions/<token>/{mask.npy, hints.npy, result.npz}
    projects/<project>/labelprop/checkpoints/<directory>/<checkpoint id>.safetensors

Every name comes from an id or a validated directory name (`apps.core.storage` refuses others).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

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
    """Write one array atomically (never pickled); returns the size in bytes."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    data = buffer.getvalue()
    atomic_write(path, data)
    return len(data)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> int:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    atomic_write(path, data)
    return len(data)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
