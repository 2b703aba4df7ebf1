"""Exports: a model (cluster), a checkpoint or a studio run's checkpoint written as ONNX,
TorchScript or safetensors, checked against the original model before it can be downloaded.

An export is made by a task of kind "export" (see `handlers.py`); the Task row is the truth about
the job, the Export row about its outcome: the file, its parity check and its notes. The file lives
under `projects/<project>/exports/<export id>/`; it is offered for download only once the export
is `completed` (its parity check passed).
"""

from django.db import models

from apps.core.ids import id_default
from apps.core.models import TenantModel


class ExportFormat(models.TextChoices):
    ONNX = "onnx", "ONNX"
    TORCHSCRIPT = "torchscript", "TorchScript"
    SAFETENSORS = "safetensors", "safetensors weights"


class ExportStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted"


TERMINAL_EXPORT_STATUSES = frozenset(
    {ExportStatus.COMPLETED, ExportStatus.FAILED, ExportStatus.ABORTED}
)


class ExportSourceKind(models.TextChoices):
    CLUSTER = "cluster", "Model (cluster)"
    CHECKPOINT = "checkpoint", "Checkpoint"
    RUN = "run", "Studio run checkpoint"


class Export(TenantModel):
    """One exported file of a model and the result of its parity check.

    The source is a cluster (its weights when the task runs, after the cluster's earlier tasks),
    a checkpoint, or a run's "best"/"last" checkpoint (then `checkpoint` is that checkpoint and
    `run_id`/`experiment_id`/`run_checkpoint` say where it came from). `network` is the network
    description the file was made from (source, template, config, shape), kept so that the export
    stays meaningful after its source is deleted.
    """

    id = models.CharField(primary_key=True, max_length=64, default=id_default("export"))
    name = models.CharField(max_length=200)
    format = models.CharField(max_length=16, choices=ExportFormat.choices)
    # The options as given, completed with every default (see `formats.py`).
    options = models.JSONField(default=dict, blank=True)
    source_kind = models.CharField(max_length=16, choices=ExportSourceKind.choices)
    cluster = models.ForeignKey(
        "clusters.Cluster", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    checkpoint = models.ForeignKey(
        "clusters.Checkpoint", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    experiment_id = models.CharField(max_length=64, blank=True, default="")
    run_id = models.CharField(max_length=64, blank=True, default="")
    run_checkpoint = models.CharField(max_length=8, blank=True, default="")
    network = models.JSONField(default=dict, blank=True)
    task = models.OneToOneField(
        "tasks.Task", on_delete=models.SET_NULL, null=True, blank=True, related_name="export"
    )
    status = models.CharField(
        max_length=16, choices=ExportStatus.choices, default=ExportStatus.PENDING, db_index=True
    )
    error = models.TextField(blank=True, default="")
    # {"passed", "max_abs_diff", "max_rel_diff", "rtol", "atol", "inputs", "num_samples", ...}
    parity = models.JSONField(null=True, blank=True)
    notes = models.JSONField(default=list, blank=True)
    # What the worker recorded: exporter, opset, cluster_version, input_scale, ...
    details = models.JSONField(default=dict, blank=True)
    file = models.CharField(max_length=200, blank=True, default="")
    filename = models.CharField(max_length=255, blank=True, default="")
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.pk})"
