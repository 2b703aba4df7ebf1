"""Writes of image datasets: ZIP archives and server folders of class folders."""

from __future__ import annotations

import os
import re
import shutil
import stat
import uuid
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from django.db import IntegrityError, transaction
from django.db.models import F
from PIL import Image, UnidentifiedImageError

from apps.accounts.models import Project, User
from apps.core.conf import setting
from apps.core.exceptions import Conflict, Forbidden, ValidationFailed
from apps.core.safeio import copy_bounded, open_image, too_large, zip_entry_count
from apps.datasets.models import Dataset, DatasetItem
from apps.datasets.services import STUDIO_DATASET_NAME
from apps.datasets.storage import (
    final_dir,
    validate_name,
    zip_max_bytes,
    zip_max_members,
    zip_max_ratio,
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
        name = validate_name(project, name)
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
                new_dir = final_dir(dataset)
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
