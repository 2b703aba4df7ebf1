"""Datasets, their items (one row per image of an image dataset), splits and upload sessions.

Sample data of tensor datasets (MNIST, CSV, volumes) is never stored row by row: it lives in NumPy
files under the dataset's directory (see `Dataset.storage_dir`) and is memory-mapped when read.
"""

import uuid
from pathlib import Path

from django.db import models

from apps.core.models import TenantModel, TimeStampedModel
from apps.core.storage import project_local_dir
from apps.core.tenancy import ProjectScopedQuerySet


class Dataset(TenantModel):
    """Data owned by a project: MNIST idx files, a CSV table, class-labelled images or 3D volumes.

    `input_shape` is the shape of one sample as `dataset_arrays` returns it (MNIST: `[rows*cols]`,
    CSV: `[columns]`, images: `[C, H, W]`, volumes: `[D, H, W]`); `label_shape` is the shape of one
    stored label (`[]` for a class index, the volume shape for label volumes).
    """

    class Kind(models.TextChoices):
        MNIST = "mnist", "MNIST idx"
        CSV = "csv", "CSV table"
        IMAGES = "images", "Class-labelled images"
        VOLUME = "volume", "3D volumes"

    class Status(models.TextChoices):
        UPLOADING = "uploading", "Uploading"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    error = models.TextField(blank=True, default="")
    num_samples = models.PositiveIntegerField(default=0)
    input_shape = models.JSONField(default=list, blank=True)
    num_classes = models.PositiveIntegerField(null=True, blank=True)
    class_names = models.JSONField(default=list, blank=True)
    label_shape = models.JSONField(default=list, blank=True)
    size_bytes = models.BigIntegerField(default=0, help_text="Bytes of the stored sample files.")
    metadata = models.JSONField(default=dict, blank=True)
    # Bumped whenever items change, so that cached decoded arrays of image datasets go stale.
    content_version = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="unique_dataset_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def storage_dir(self) -> Path:
        """The dataset's local directory (created on demand)."""
        return project_local_dir(self.project_id, "datasets", str(self.pk))


class DatasetItem(models.Model):
    """One image of an image dataset: its class, size and one split value per split."""

    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, related_name="+")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="items")
    filename = models.CharField(max_length=500, help_text="Path inside the class folders.")
    class_name = models.CharField(max_length=200)
    size = models.BigIntegerField(default=0)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    mode = models.CharField(max_length=16, blank=True, default="")
    content_type = models.CharField(max_length=64, default="application/octet-stream")
    storage_name = models.CharField(max_length=100, help_text="Generated file name on disk.")
    splits = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["filename"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "filename"], name="unique_item_filename"),
        ]
        indexes = [
            models.Index(fields=["dataset", "class_name"]),
            models.Index(fields=["dataset", "size"]),
        ]

    def __str__(self) -> str:
        return self.filename

    @property
    def path(self) -> Path:
        return self.dataset.storage_dir / "images" / self.storage_name


class Split(TimeStampedModel):
    """A named split of a dataset; item `splits[index]` holds each item's value for it."""

    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, related_name="+")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="splits")
    index = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    ratios = models.JSONField(default=dict)
    seed = models.BigIntegerField(default=0)

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["dataset", "index"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "index"], name="unique_split_index"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (#{self.index})"


class UploadSession(TenantModel):
    """A file uploaded in chunks at byte offsets (REST PUTs or Hanami websocket frames).

    `ranges` holds the merged `[start, end)` byte ranges received so far, so chunks may arrive out
    of order and re-sends are idempotent.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    filename = models.CharField(max_length=255, blank=True, default="")
    size = models.BigIntegerField()
    received_bytes = models.BigIntegerField(default=0)
    ranges = models.JSONField(default=list, blank=True)
    dataset = models.ForeignKey(
        Dataset, on_delete=models.CASCADE, null=True, blank=True, related_name="uploads"
    )
    role = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.filename or self.pk} ({self.received_bytes}/{self.size})"

    @property
    def complete(self) -> bool:
        return self.received_bytes >= self.size

    @property
    def path(self) -> Path:
        return project_local_dir(self.project_id, "uploads") / f"{self.pk}.part"


class TaskDataset(models.Model):
    """The dataset a task reads (train, request, evaluate): the job engine keeps no dataset, so
    the apps that submit such tasks record it here (`services.task_dataset_link`).

    `dataset` is SET_NULL: deleting a dataset keeps the history of the tasks that used it (a
    still-queued task then fails with a clear message instead of blocking the delete).
    """

    task = models.OneToOneField(
        "tasks.Task", on_delete=models.CASCADE, primary_key=True, related_name="dataset_link"
    )
    dataset = models.ForeignKey(
        Dataset, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    def __str__(self) -> str:
        return f"task {self.task_id} reads {self.dataset_id}"
