"""Writes of datasets: deletion, splits and the datasets of tasks.

The importers live in `imports` (MNIST, CSV, volumes) and `images` (ZIPs, folders), the shared
files and limits in `storage`, upload sessions and the datasets made from them in `uploads`.
"""

from __future__ import annotations

import shutil

from django.db import transaction

from apps.accounts.models import Project
from apps.core.exceptions import Conflict, ValidationFailed
from apps.datasets.models import Dataset, DatasetItem, Split, UploadSession
from apps.datasets.splitting import split_assign, validate_ratios, validate_seed
from apps.datasets.storage import final_dir

STUDIO_DATASET_NAME = "images"  # the dataset the studio's image imports go to by default

# -- deletion ---------------------------------------------------------------------------------


def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset with its items, splits and upload sessions, then its files."""
    directory = final_dir(dataset)
    uploads = [u.path for u in dataset.uploads.all()]
    dataset.delete()
    shutil.rmtree(directory, ignore_errors=True)
    for path in uploads:
        path.unlink(missing_ok=True)


def dataset_discard(*, dataset: Dataset) -> None:
    """Delete a pending or failed dataset but keep its upload sessions for another attempt."""
    UploadSession.objects.filter(dataset=dataset).update(dataset=None, role="")
    directory = final_dir(dataset)
    Dataset.objects.filter(pk=dataset.pk).delete()
    shutil.rmtree(directory, ignore_errors=True)


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
