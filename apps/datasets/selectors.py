"""Reads of datasets: lookups within the caller's scope, sample arrays, image listings and
split statistics."""

from __future__ import annotations

import os
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from django.db.models import Count, QuerySet, Sum
from PIL import Image

from apps.core.exceptions import Conflict, NotFound, ValidationFailed
from apps.core.safeio import open_image, writable_npy
from apps.core.tenancy import ProjectAccess
from apps.datasets.models import Dataset, DatasetItem, Split, UploadSession
from apps.datasets.services import STUDIO_DATASET_NAME
from apps.datasets.splitting import SPLIT_VALUES, split_assign, validate_ratios, validate_seed

THUMBNAIL_SIZE = 128
IMAGE_SORTS = {"filename": "filename", "class": "class_name", "size": "size"}


def dataset_get(
    *, access: ProjectAccess, dataset_id, for_edit: bool = False, denied: str | None = None
) -> Dataset:
    """One dataset the caller may see (and change, with `for_edit`: else Forbidden with
    `denied`); NotFound for missing, foreign or malformed ids."""
    try:
        uuid.UUID(str(dataset_id))
    except (TypeError, ValueError):
        raise NotFound("Dataset not found.") from None
    return Dataset.objects.get_visible(access, for_edit=for_edit, denied=denied, pk=dataset_id)


def dataset_list(*, access: ProjectAccess) -> QuerySet[Dataset]:
    """The datasets the caller may see, newest first."""
    return Dataset.objects.visible_to(access).order_by("-created_at", "pk")


def studio_dataset(
    *, access: ProjectAccess, for_edit: bool = False, denied: str | None = None
) -> Dataset | None:
    """The project's image dataset that the studio routes (`/api/datasets/{project_id}`) show,
    None when the caller sees none; with `for_edit`, Forbidden (`denied`) unless the caller may
    change the one it sees. (Dataset names are unique per project.)"""
    try:
        return Dataset.objects.get_visible(
            access,
            for_edit=for_edit,
            denied=denied,
            name=STUDIO_DATASET_NAME,
            kind=Dataset.Kind.IMAGES,
        )
    except NotFound:
        return None


def studio_dataset_get(*, access: ProjectAccess) -> Dataset:
    dataset = studio_dataset(access=access)
    if dataset is None:
        raise NotFound("No dataset has been imported into this project yet.")
    return dataset


# -- arrays -----------------------------------------------------------------------------------


def dataset_arrays(
    dataset: Dataset, *, mmap: bool = True, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs float32 `(N, *input_shape)` and labels int64 (class indices `(N,)`, or label
    volumes) or None, memory-mapped from the dataset's .npy files when `mmap` (inputs stored in
    another dtype come as `Float32Inputs`, converted as they are read).

    MNIST inputs are scaled to 0..1. Image datasets are decoded to `(N, C, H, W)` in 0..1 at
    their common size (or `size=(H, W)`), ordered by filename, and cached on disk.
    """
    if dataset.status != Dataset.Status.READY:
        raise Conflict(f"Dataset {dataset.name!r} is {dataset.status}, not ready.")
    if dataset.kind == Dataset.Kind.IMAGES:
        return _image_arrays(dataset, mmap=mmap, size=size)
    directory = dataset.storage_dir
    mode = "r" if mmap else None
    stored = np.load(directory / "inputs.npy", mmap_mode="r", allow_pickle=False)
    inputs = stored if stored.dtype == np.float32 else Float32Inputs(stored)
    if not mmap:
        inputs = np.array(inputs, dtype=np.float32)
    labels_path = directory / "labels.npy"
    labels = (
        np.load(labels_path, mmap_mode=mode, allow_pickle=False) if labels_path.exists() else None
    )
    return inputs, labels


class Float32Inputs:
    """Stored inputs that are not float32 (MNIST keeps the idx file's dtype: uint8 pixels are a
    quarter of the bytes) read as float32, uint8 scaled to 0..1, one indexed slice at a time.

    It answers what readers of `dataset_arrays` use (`shape`, `len`, indexing, `min`/`max`,
    `np.asarray`), so a reader that needs a few rows converts only those; converting the whole
    array (`np.asarray`) is what training does anyway."""

    dtype = np.dtype(np.float32)

    def __init__(self, stored: np.ndarray) -> None:
        self.stored = stored
        self.scale = np.float32(1 / 255) if stored.dtype == np.uint8 else None
        self.shape, self.ndim, self.size = stored.shape, stored.ndim, stored.size

    def __len__(self) -> int:
        return len(self.stored)

    def _convert(self, values) -> np.ndarray:
        out = np.asarray(values, dtype=np.float32)
        if self.scale is not None:
            out *= self.scale
        return out

    def __getitem__(self, key) -> np.ndarray:
        return self._convert(self.stored[key])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._convert(self.stored)
        return out if dtype is None else out.astype(dtype, copy=False)

    def max(self) -> np.float32:
        return self._convert(self.stored.max())[()]

    def min(self) -> np.float32:
        return self._convert(self.stored.min())[()]


_SINGLE_CHANNEL = {"1", "L", "I", "I;16", "F"}


def _image_arrays(dataset: Dataset, *, mmap: bool, size: tuple[int, int] | None):
    items = list(
        dataset.items.order_by("filename").values_list(
            "storage_name", "class_name", "mode", "height", "width"
        )
    )
    if not items:
        raise Conflict(f"Dataset {dataset.name!r} has no images.")
    if size is None:
        (h, w), _ = Counter((it[3], it[4]) for it in items).most_common(1)[0]
    else:
        h, w = (int(v) for v in size)
    channels = 1 if all(it[2] in _SINGLE_CHANNEL for it in items) else 3
    cache = dataset.storage_dir / "cache"
    cache.mkdir(exist_ok=True)
    stem = f"v{dataset.content_version}-{h}x{w}-c{channels}"
    inputs_path, labels_path = cache / f"{stem}-inputs.npy", cache / f"{stem}-labels.npy"
    if not (inputs_path.exists() and labels_path.exists()):
        for old in cache.glob("v*-*.npy"):
            if not old.name.startswith(f"v{dataset.content_version}-"):
                old.unlink(missing_ok=True)
        tmp = cache / f"tmp-{uuid.uuid4().hex}.npy"
        out = writable_npy(tmp, dtype=np.float32, shape=(len(items), channels, h, w))
        images_dir = dataset.storage_dir / "images"
        mode = "L" if channels == 1 else "RGB"
        for i, (storage_name, *_rest) in enumerate(items):
            with open_image(images_dir / storage_name, what=f"image {storage_name}") as img:
                img = img.convert(mode)
                if img.size != (w, h):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.float32) / 255.0
            out[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
        del out
        index = {name: i for i, name in enumerate(dataset.class_names)}
        np.save(labels_path, np.asarray([index[it[1]] for it in items], dtype=np.int64))
        os.replace(tmp, inputs_path)
    read_mode = "r" if mmap else None
    return (
        np.load(inputs_path, mmap_mode=read_mode, allow_pickle=False),
        np.load(labels_path, mmap_mode=read_mode, allow_pickle=False),
    )


# -- images -----------------------------------------------------------------------------------


def image_list(
    *,
    dataset: Dataset,
    sort_by: str = "filename",
    sort_order: str = "asc",
    filter_class: str | None = None,
    search: str | None = None,
) -> QuerySet[DatasetItem]:
    """The images of a dataset, sorted by filename, class or size and optionally filtered."""
    if sort_by not in IMAGE_SORTS:
        raise ValidationFailed.for_field("sort_by", f"must be one of {', '.join(IMAGE_SORTS)}.")
    if sort_order not in ("asc", "desc"):
        raise ValidationFailed.for_field("sort_order", "must be asc or desc.")
    qs = DatasetItem.objects.filter(dataset=dataset)
    if filter_class:
        qs = qs.filter(class_name=filter_class)
    if search:
        qs = qs.filter(filename__icontains=search)
    sign = "-" if sort_order == "desc" else ""
    keys = [IMAGE_SORTS[sort_by]] + (["filename"] if sort_by != "filename" else [])
    return qs.order_by(*(sign + k for k in keys), "pk")


def image_get(*, dataset: Dataset, filename: str) -> DatasetItem:
    """One image of the dataset by its path inside the class folders."""
    item = DatasetItem.objects.filter(dataset=dataset, filename=str(filename)).first()
    if item is None:
        raise NotFound("Image not found.")
    item.dataset = dataset
    return item


def image_thumbnail(item: DatasetItem) -> tuple[Path, str]:
    """A thumbnail (at most 128 px a side) cached next to the dataset: (path, content type).

    The image's pixel count is checked from its header (IMAGE_MAX_PIXELS, 413) before it is
    decoded: images stored before that limit existed cannot make a thumbnail cost gigabytes."""
    thumbs = item.dataset.storage_dir / "thumbnails"
    thumbs.mkdir(exist_ok=True)
    jpeg = item.content_type == "image/jpeg"
    path = thumbs / (Path(item.storage_name).stem + (".jpg" if jpeg else ".png"))
    if not path.exists():
        tmp = thumbs / f"tmp-{uuid.uuid4().hex}{path.suffix}"
        try:
            with open_image(item.path, what=f"thumbnail of {item.filename!r}") as img:
                img.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
                if jpeg:
                    img.convert("RGB").save(tmp, "JPEG", quality=85)
                else:
                    if img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
                        img = img.convert("RGBA")
                    img.save(tmp, "PNG")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
    return path, "image/jpeg" if jpeg else "image/png"


def dataset_stats(dataset: Dataset | None) -> dict:
    """The studio's dataset info: counts, classes with their sizes and the split names."""
    if dataset is None:
        return {
            "dataset_id": None,
            "name": STUDIO_DATASET_NAME,
            "num_images": 0,
            "num_classes": 0,
            "classes": [],
            "total_size": 0,
            "split_names": [],
        }
    per_class = (
        dataset.items.values("class_name")
        .annotate(count=Count("id"), size=Sum("size"))
        .order_by("class_name")
    )
    classes = [{"name": r["class_name"], "count": r["count"], "size": r["size"]} for r in per_class]
    return {
        "dataset_id": str(dataset.pk),
        "name": dataset.name,
        "num_images": sum(c["count"] for c in classes),
        "num_classes": len(classes),
        "classes": classes,
        "total_size": sum(c["size"] or 0 for c in classes),
        "split_names": list(dataset.splits.order_by("index").values_list("name", flat=True)),
    }


# -- splits -----------------------------------------------------------------------------------


def split_list(*, access: ProjectAccess, dataset: Dataset) -> QuerySet[Split]:
    return Split.objects.visible_to(access).filter(dataset=dataset).order_by("index")


def split_get(*, access: ProjectAccess, dataset: Dataset, split_index) -> Split:
    split = split_list(access=access, dataset=dataset).filter(index=split_index).first()
    if split is None:
        raise NotFound("Split not found.")
    return split


def _counts(values) -> dict[str, int]:
    counter = Counter(values)
    stats = {v: counter.get(v, 0) for v in SPLIT_VALUES}
    if counter.get("none"):
        stats["none"] = counter["none"]
    return stats


def distribution(class_names, values) -> tuple[dict, dict]:
    """(stats, per-class) counts of split values: `{train, val, test[, none]}`."""
    per_class: dict[str, list[str]] = defaultdict(list)
    for cls, value in zip(class_names, values, strict=True):
        per_class[cls].append(value)
    return _counts(values), {cls: _counts(v) for cls, v in sorted(per_class.items())}


def split_stats(*, dataset: Dataset, splits: list[Split] | None = None) -> list[dict]:
    """Stats and per-class distribution of every split (or of `splits`), in one query."""
    splits = splits if splits is not None else list(dataset.splits.order_by("index"))
    rows = list(dataset.items.values_list("class_name", "splits"))
    classes = [r[0] for r in rows]
    result = []
    for split in splits:
        values = [(r[1][split.index] if len(r[1] or []) > split.index else "none") for r in rows]
        stats, per_class = distribution(classes, values)
        result.append(
            {
                "split_index": split.index,
                "name": split.name,
                "ratios": split.ratios,
                "seed": split.seed,
                "stats": stats,
                "per_class": per_class,
            }
        )
    return result


def split_preview(*, dataset: Dataset, ratios: dict, seed: int) -> dict:
    """What creating a split with these ratios and seed would give; writes nothing."""
    ratios = validate_ratios(ratios)
    seed = validate_seed(seed)
    classes = list(dataset.items.order_by("filename").values_list("class_name", flat=True))
    values = split_assign(classes, ratios, seed) if classes else []
    stats, per_class = distribution(classes, list(values))
    return {"ratios": ratios, "seed": seed, "stats": stats, "per_class": per_class}


# --- the datasets of tasks -----------------------------------------------------------------------


def task_dataset(task) -> Dataset:
    """The dataset `task` reads (`services.task_dataset_link`); ValidationFailed when it was
    deleted since (or the task never had one)."""
    from apps.datasets.models import TaskDataset

    link = TaskDataset.objects.select_related("dataset").filter(task_id=task.pk).first()
    if link is None or link.dataset is None:
        raise ValidationFailed.for_field("dataset_id", "The task's dataset was deleted.")
    return link.dataset


def task_dataset_id(task) -> uuid.UUID | None:
    """The id of the dataset `task` reads; None without one, or when it was deleted."""
    from apps.datasets.models import TaskDataset

    return TaskDataset.objects.filter(task_id=task.pk).values_list("dataset_id", flat=True).first()


def dataset_upload_progress(dataset: Dataset) -> dict:
    """How far the uploads of a pending dataset came: `complete` (every byte of every upload
    arrived; true once the dataset left "uploading") and each upload's received fraction."""
    sessions = list(dataset.uploads.all())
    fractions = {str(s.pk): (s.received_bytes / s.size if s.size else 1.0) for s in sessions}
    complete = True
    if dataset.status == Dataset.Status.UPLOADING:
        complete = all(s.complete for s in sessions)
    return {"complete": complete, "files": fractions}


def dataset_upload_roles(dataset: Dataset) -> dict[str, str]:
    """The uploads bound to a dataset: upload id -> its role ("images", "labels", "file")."""
    return {str(s.pk): s.role for s in dataset.uploads.all()}


def upload_session_editable(*, access: ProjectAccess, session_id) -> UploadSession | None:
    """An upload session (with its dataset) that the caller may write into, or None."""
    sessions = UploadSession.objects.editable_by(access).select_related("dataset")
    return sessions.filter(pk=session_id).first()
