"""Storage helpers: every file of a project lives under `projects/<project id>/` in the default
storage (local disk by default, any Django storage backend possible). Names are built from ids
the platform generated, never from user input."""

import re
import shutil
from pathlib import Path

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
