"""Clusters (models built from a template or a named architecture), their checkpoints, and hosts.

A cluster's current weights live in one safetensors file under the project's storage prefix
(`projects/<project>/clusters/<cluster id>/weights.safetensors`); `version` counts the times they
were replaced (0: never trained, the weights are rebuilt from the template and `config["seed"]`).
"""

import uuid

from django.db import models

from apps.core.models import TenantModel, TimeStampedModel


class HostKind(models.TextChoices):
    CPU = "cpu", "CPU"
    GPU = "gpu", "GPU"


class HostState(models.TextChoices):
    AVAILABLE = "available", "Available"
    UNAVAILABLE = "unavailable", "Unavailable"


class Host(TimeStampedModel):
    """A device tasks can run on; its id is also the name of its task queue ("cpu", "gpu-0").

    Hosts are global (not tenant-owned): they are the machine's devices, refreshed from
    `ml.devices` by `host_refresh`.
    """

    id = models.CharField(primary_key=True, max_length=32)
    kind = models.CharField(max_length=8, choices=HostKind.choices)
    name = models.CharField(max_length=200, blank=True)
    memory_bytes = models.BigIntegerField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=HostState.choices, default=HostState.AVAILABLE)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.id


class ClusterMode(models.TextChoices):
    TASK = "TASK", "Task"
    DIRECT = "DIRECT", "Direct"


class Cluster(TenantModel):
    """A network of a project: built from a Hanami template or a named architecture."""

    SOURCE_TEMPLATE = "template"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    template = models.TextField(blank=True)
    # {"inputs": {name: size}, "outputs": {name: size}, "bricks": n, "parameters": n}
    shape = models.JSONField(default=dict, blank=True)
    # "template" or an architecture name of `ml.architectures` ("mlp", "lenet", ...).
    source = models.CharField(max_length=32, default=SOURCE_TEMPLATE)
    # Build options: seed, and for architectures input_shape / num_classes; input_scale once trained.
    config = models.JSONField(default=dict, blank=True)
    mode = models.CharField(max_length=8, choices=ClusterMode.choices, default=ClusterMode.TASK)
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="clusters")
    version = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.pk})"


class Checkpoint(TenantModel):
    """A saved copy of a cluster's weights, restorable into any cluster of a compatible shape.

    `metadata` carries the template (or architecture), the shape and the cluster version it was
    taken from; the file is safetensors under `projects/<project>/checkpoints/`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    cluster = models.ForeignKey(
        Cluster, on_delete=models.SET_NULL, null=True, blank=True, related_name="checkpoints"
    )
    file = models.CharField(max_length=500)
    size_bytes = models.BigIntegerField(default=0)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.pk})"


class RequestResult(TenantModel):
    """The outputs of a request task: same id and name as the task, outputs stored as .npy files.

    `shape` is the shape of the predicted-class array (`[num_samples]`); logits, when kept, are
    stored next to it as `[num_samples, num_outputs]`.
    """

    id = models.UUIDField(primary_key=True, editable=False)
    name = models.CharField(max_length=200)
    task = models.OneToOneField(
        "tasks.Task",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="request_result",
    )
    cluster = models.ForeignKey(
        Cluster, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    dataset = models.ForeignKey(
        "datasets.Dataset", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    num_samples = models.PositiveIntegerField(default=0)
    shape = models.JSONField(default=list, blank=True)
    has_logits = models.BooleanField(default=False)
    summary = models.JSONField(default=dict, blank=True)

    class Meta:
        # Created by the job engine's app; the table kept its name when the model moved here.
        db_table = "tasks_requestresult"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.pk})"
