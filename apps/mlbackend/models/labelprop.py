"""Rows of the labelprop half: the volumes napari-labelprop sent (by hash), its sessions (one
per /inference or /training request, each backed by a Task), the registration checkpoints and
the project's current checkpoint directory.

Files live under the project's storage prefix (`projects/<project>/labelprop/...`): volumes as
`.npy`, a session's mask and results as `.npy` / `.npz`, checkpoints as safetensors. Names on
disk are built from ids and validated directory names, never from what the client sent.
"""

import uuid

from django.db import models

from apps.core.models import TenantModel, TimeStampedModel
from apps.core.tenancy import ProjectScopedQuerySet

__all__ = [
    "DEFAULT_CKPT_DIR",
    "LabelpropCheckpoint",
    "LabelpropSession",
    "LabelpropSessionKind",
    "LabelpropSessionState",
    "LabelpropVolume",
    "LabelpropWorkspace",
]

DEFAULT_CKPT_DIR = "default"


class LabelpropVolume(TenantModel):
    """A 3D image kept so that later requests can name it by `hash` (the md5 of its float32
    bytes, as the client computes it) instead of sending it again. Stored as `<id>.npy`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hash = models.CharField(max_length=32)
    shape = models.JSONField(default=list, blank=True)
    size_bytes = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "hash"], name="unique_labelprop_volume_hash")
        ]

    def __str__(self) -> str:
        return f"{self.hash} {self.shape}"


class LabelpropCheckpoint(TenantModel):
    """Weights of the registration network (`ml.labelprop`), stored as `<id>.safetensors`.

    `name` is what `/list_ckpts` shows and requests name, kept as the user gave it (it ends in
    `.ckpt`, like upstream's files, although the content is safetensors); it is unique within a
    checkpoint directory and a checkpoint is never overwritten (see `services.checkpoint_store`).
    `metadata["size"]` is the working size the network was really trained at.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    directory = models.CharField(max_length=64, default=DEFAULT_CKPT_DIR)
    name = models.CharField(max_length=200)
    size_bytes = models.BigIntegerField(default=0)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["directory", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "directory", "name"], name="unique_labelprop_checkpoint_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.directory}/{self.name}"


class LabelpropSessionKind(models.TextChoices):
    INFERENCE = "inference", "Inference (propagate with a checkpoint)"
    TRAINING = "training", "Training (then propagate)"


class LabelpropSessionState(models.TextChoices):
    PENDING = "pending", "Pending"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"


class LabelpropSession(TenantModel):
    """One /inference or /training request; its id is the token the client polls for.

    `params` are the request's parameters as sent (without `hash`), what `/get_session_info`
    answers. The work is `task`; a request that could not start (unknown hash or checkpoint,
    shapes that do not match) is a session FAILED from the start, without a task, so that the
    client sees the reason at `/download_inference`. `state` is PENDING until the task's handler
    writes the results; a task that ends otherwise (failed, aborted, time limit) makes the
    session failed with the task's error (see `selectors.session_state`).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=LabelpropSessionKind.choices)
    state = models.CharField(
        max_length=16,
        choices=LabelpropSessionState.choices,
        default=LabelpropSessionState.PENDING,
        db_index=True,
    )
    params = models.JSONField(default=dict, blank=True)
    volume = models.ForeignKey(
        LabelpropVolume, on_delete=models.SET_NULL, null=True, blank=True, related_name="sessions"
    )
    task = models.OneToOneField(
        "tasks.Task",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="labelprop_session",
    )
    # The checkpoint inference used, or the one training produced.
    checkpoint = models.ForeignKey(
        LabelpropCheckpoint,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="sessions",
    )
    error = models.TextField(blank=True, default="")
    summary = models.JSONField(default=dict, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "state"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.pk} ({self.state})"


class LabelpropWorkspace(TimeStampedModel):
    """Per-project labelprop settings: the checkpoint directory `/set_ckpt_dir` selected (a
    named location inside the project's storage, never a server path)."""

    project = models.OneToOneField(
        "accounts.Project", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    ckpt_dir = models.CharField(max_length=64, default=DEFAULT_CKPT_DIR)

    objects = ProjectScopedQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.project_id}: {self.ckpt_dir}"
