"""Reads of exports: lists, one export, its file, its state as the API shows it, and the
resolution of an export's source (a cluster, a checkpoint or a studio run's checkpoint)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import QuerySet

from apps.core.exceptions import ValidationFailed
from apps.core.storage import project_name
from apps.core.tenancy import ProjectAccess
from apps.exports.models import TERMINAL_EXPORT_STATUSES, Export, ExportSourceKind, ExportStatus

if TYPE_CHECKING:
    from apps.clusters.models import Checkpoint, Cluster

RUN_CHECKPOINTS = ("best", "last")


def export_list(*, access: ProjectAccess) -> QuerySet[Export]:
    """The exports the caller sees, newest first."""
    return Export.objects.visible_to(access).select_related("owner", "task").order_by("-created_at")


def export_get(
    *, access: ProjectAccess, export_id: str, for_edit: bool = False, denied: str | None = None
) -> Export:
    """One export the caller sees, or NotFound (missing and foreign alike); with `for_edit`,
    one the caller may change, or Forbidden (`denied`)."""
    return Export.objects.select_related("owner", "task").get_visible(
        access, for_edit=for_edit, denied=denied, pk=str(export_id)
    )


def export_dir(export: Export) -> Path:
    """The export's directory (not created here)."""
    return Path(settings.MEDIA_ROOT) / project_name(str(export.project_id), "exports", export.pk)


def export_file_path(export: Export) -> Path | None:
    return export_dir(export) / export.file if export.file else None


@dataclass(frozen=True)
class ExportState:
    """An export's status as the API shows it: the row's own, or its task's when the task ended
    without the worker updating the row (worker lost too often, task deleted with its model)."""

    status: str
    error: str
    progress: float


def export_state(export: Export) -> ExportState:
    if export.status in TERMINAL_EXPORT_STATUSES:
        progress = 1.0 if export.status == ExportStatus.COMPLETED else _task_progress(export)
        return ExportState(export.status, export.error, progress)
    task = export.task
    if task is None:
        return ExportState(
            ExportStatus.FAILED,
            export.error or "The export's task was deleted (with its model).",
            0,
        )
    if task.state == "failed":
        return ExportState(
            ExportStatus.FAILED, task.error or "The export task failed.", task.progress
        )
    if task.state == "aborted":
        return ExportState(ExportStatus.ABORTED, task.error or "Aborted.", task.progress)
    if task.state == "finished":
        return ExportState(ExportStatus.FAILED, "The export task ended without a result.", 1.0)
    status = ExportStatus.RUNNING if task.state == "active" else ExportStatus.PENDING
    return ExportState(status, "", task.progress)


def _task_progress(export: Export) -> float:
    return float(export.task.progress) if export.task is not None else 0.0


# --- sources -------------------------------------------------------------------------------------


@dataclass
class ExportSource:
    """What an export is made from, resolved within the caller's project."""

    kind: str
    name: str
    network: dict[str, Any]
    cluster: Cluster | None = None
    checkpoint: Checkpoint | None = None
    experiment_id: str = ""
    run_id: str = ""
    run_checkpoint: str = ""
    # A dataset of the model known at creation (a run's experiment), for the parity inputs.
    hints: dict[str, Any] = field(default_factory=dict)


def export_source_get(
    *,
    access: ProjectAccess,
    cluster_id: Any = None,
    checkpoint_id: Any = None,
    run_id: str | None = None,
    experiment_id: str | None = None,
    which: str | None = None,
) -> ExportSource:
    """Resolve exactly one source among a cluster, a checkpoint and a run (+ "best"/"last").

    A source the caller does not see answers NotFound, like a missing one.
    """
    from apps.clusters import selectors as clusters

    given = [
        n
        for n, v in (
            ("cluster_id", cluster_id),
            ("checkpoint_id", checkpoint_id),
            ("run_id", run_id),
        )
        if v
    ]
    if len(given) != 1:
        raise ValidationFailed(
            "Give exactly one source: run_id (with experiment_id and checkpoint), cluster_id "
            "or checkpoint_id.",
            details={"source": ["Give exactly one of run_id, cluster_id, checkpoint_id."]},
        )
    if not run_id and (experiment_id or which):
        field_name = "experiment_id" if experiment_id else "checkpoint"
        raise ValidationFailed.for_field(field_name, "Only used with run_id.")
    if cluster_id:
        cluster = clusters.cluster_get(access=access, cluster_id=cluster_id)
        return ExportSource(
            ExportSourceKind.CLUSTER, cluster.name, network_of_cluster(cluster), cluster=cluster
        )
    if checkpoint_id:
        checkpoint = clusters.checkpoint_get(access=access, checkpoint_id=checkpoint_id)
        return ExportSource(
            ExportSourceKind.CHECKPOINT,
            checkpoint.name,
            network_of_checkpoint(checkpoint),
            checkpoint=checkpoint,
        )
    return _run_source(access, str(run_id), experiment_id, which or "best")


def _run_source(
    access: ProjectAccess, run_id: str, experiment_id: str | None, which: str
) -> ExportSource:
    if which not in RUN_CHECKPOINTS:
        raise ValidationFailed.for_field("checkpoint", "Must be 'best' or 'last'.")
    try:
        from apps.training import selectors as training
    except ImportError:  # the studio's training app is not installed
        raise ValidationFailed.for_field("run_id", "Studio runs are not available.") from None
    run = training.run_get(
        access=access, run_id=run_id, experiment_id=str(experiment_id) if experiment_id else None
    )
    checkpoint = training.run_checkpoint_get(run=run, which=which)
    hints: dict[str, Any] = {}
    dataset_id = getattr(getattr(run, "experiment", None), "dataset_id", None)
    if dataset_id:
        hints["dataset_id"] = str(dataset_id)
    return ExportSource(
        ExportSourceKind.RUN,
        f"{run.pk}-{which}",
        network_of_checkpoint(checkpoint),
        checkpoint=checkpoint,
        experiment_id=str(run.experiment_id),
        run_id=str(run.pk),
        run_checkpoint=which,
        hints=hints,
    )


_NETWORK_KEYS = (
    "source",
    "template",
    "config",
    "shape",
    "cluster_id",
    "input_size",
    "input_scale",
    "normalize",
    "class_names",
)


def network_of_cluster(cluster: Cluster) -> dict[str, Any]:
    from apps.clusters.selectors import stored_input_scale

    config = dict(cluster.config or {})
    network = {
        "source": cluster.source,
        "template": cluster.template,
        "config": config,
        "shape": dict(cluster.shape or {}),
        "cluster_id": str(cluster.pk),
    }
    scale = stored_input_scale(cluster=cluster)
    if scale:
        network["input_scale"] = scale
    return network


def network_of_checkpoint(checkpoint: Checkpoint) -> dict[str, Any]:
    """The network a checkpoint's weights belong to: its metadata, else its cluster's."""
    from apps.clusters.selectors import stored_input_scale

    meta = checkpoint.metadata or {}
    if meta.get("source") and isinstance(meta.get("config"), dict):
        network = {k: meta[k] for k in _NETWORK_KEYS if k in meta}
        network.setdefault("template", "")
        network.setdefault("shape", {})
        scale = stored_input_scale(checkpoint_metadata=meta)
        if "input_scale" not in network and scale:  # the one in its cluster's config
            network["input_scale"] = scale
        return network
    if checkpoint.cluster is not None:
        return network_of_cluster(checkpoint.cluster)
    raise ValidationFailed.for_field(
        "checkpoint_id", "The checkpoint does not say which network its weights belong to."
    )


def network_sample_shape(network: dict[str, Any]) -> list[int] | None:
    """The shape of one input sample (no batch), or None for several inputs or outputs."""
    shape = network.get("shape") or {}
    inputs, outputs = shape.get("inputs") or {}, shape.get("outputs") or {}
    if len(inputs) != 1 or len(outputs) != 1:
        return None
    size = int(next(iter(inputs.values())))
    for candidate in (network.get("input_size"), (network.get("config") or {}).get("input_shape")):
        if (
            isinstance(candidate, list)
            and candidate
            and all(isinstance(v, int) and v >= 1 for v in candidate)
            and math.prod(candidate) == size
        ):
            return list(candidate)
    return [size]
