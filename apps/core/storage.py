"""Storage helpers: every file of a project lives under `projects/<project id>/` in the default
storage (local disk by default, any Django storage backend possible). Names are built from ids
the platform generated, never from user input."""

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def project_prefix(project_id: str) -> str:
    return f"projects/{_safe(project_id)}"


def project_name(project_id: str, *parts: str) -> str:
    """A storage name inside the project's prefix; every part must be a plain safe segment."""
    return "/".join([project_prefix(project_id), *(_safe(p) for p in parts)])


def project_local_dir(project_id: str, *parts: str) -> Path:
    """The local directory for a project's files (for NumPy memory maps on the local backend)."""
    path = Path(settings.MEDIA_ROOT) / project_name(project_id, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def delete_project_files(project_id: str) -> None:
    """Remove everything stored under the project's prefix."""
    local = Path(settings.MEDIA_ROOT) / project_prefix(project_id)
    if local.exists():
        shutil.rmtree(local, ignore_errors=True)
    elif hasattr(default_storage, "listdir"):
        _delete_tree(project_prefix(project_id))


def _delete_tree(name: str) -> None:
    try:
        dirs, files = default_storage.listdir(name)
    except (FileNotFoundError, NotImplementedError):
        return
    for f in files:
        default_storage.delete(f"{name}/{f}")
    for d in dirs:
        _delete_tree(f"{name}/{d}")


def _safe(part: str) -> str:
    if not isinstance(part, str) or not _SAFE_PART.match(part) or ".." in part:
        raise ValueError(f"unsafe storage name part: {part!r}")
    return part


# -- atomic files and saved states (checkpoints, resume state) ----------------------------------

META_KEY = "orchard"


def state_bytes(state: dict, metadata: dict[str, Any]) -> bytes:
    """A state dict and JSON metadata as one safetensors file's bytes (what `read_state` reads)."""
    from ml.checkpoints import state_to_bytes

    return state_to_bytes(
        {k: v.detach().cpu().contiguous() for k, v in state.items()},
        {META_KEY: json.dumps(metadata)},
    )


def write_state(path: Path, state: dict, metadata: dict[str, Any]) -> int:
    """Write a state dict and JSON metadata as safetensors, atomically; returns the size."""
    data = state_bytes(state, metadata)
    atomic_write(path, data)
    return len(data)


def read_state(path: Path) -> tuple[dict, dict[str, Any]]:
    """Read a safetensors file written by `write_state`: (state dict, JSON metadata)."""
    from ml.checkpoints import state_from_bytes

    state, metadata = state_from_bytes(Path(path).read_bytes())
    raw = (metadata or {}).get(META_KEY)
    try:
        meta = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    except ValueError:
        meta = {}
    return state, meta


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
