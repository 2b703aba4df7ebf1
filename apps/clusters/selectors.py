"""Reads of clusters, checkpoints and hosts."""

from collections.abc import Mapping
from typing import Any

from django.db.models import QuerySet

from apps.clusters.models import Checkpoint, Cluster, Host
from apps.core.tenancy import ProjectAccess


def cluster_get(
    *, access: ProjectAccess, cluster_id, for_edit: bool = False, denied: str | None = None
) -> Cluster:
    """A cluster the caller sees, or NotFound; with `for_edit`, one the caller may change, or
    Forbidden (`denied`)."""
    return Cluster.objects.get_visible(access, for_edit=for_edit, denied=denied, pk=cluster_id)


def cluster_list(*, access: ProjectAccess) -> QuerySet[Cluster]:
    return Cluster.objects.visible_to(access).select_related("host")


def checkpoint_get(*, access: ProjectAccess, checkpoint_id, for_edit: bool = False) -> Checkpoint:
    """A checkpoint the caller sees (and may change, with `for_edit`), or NotFound / Forbidden."""
    return Checkpoint.objects.get_visible(access, for_edit=for_edit, pk=checkpoint_id)


def checkpoint_list(*, access: ProjectAccess) -> QuerySet[Checkpoint]:
    return Checkpoint.objects.visible_to(access)


def host_list() -> QuerySet[Host]:
    return Host.objects.order_by("id")


def checkpoint_exists(*, project_id, checkpoint_id) -> bool:
    """Whether a checkpoint row of the project still exists (for a task that keeps rewriting the
    checkpoint ids it created; no caller's access to check there)."""
    return Checkpoint.objects.filter(project_id=project_id, pk=checkpoint_id).exists()


def task_cluster(task) -> Cluster:
    """The cluster a task works on (its target; a cluster's deletion takes its tasks along)."""
    return Cluster.objects.get(pk=task.target_id)


def task_cluster_or_none(task) -> Cluster | None:
    """The cluster `task` works on, None for a task of no cluster."""
    if task.target_type != Cluster._meta.label_lower:
        return None
    return Cluster.objects.filter(pk=task.target_id).first()


def stored_input_scale(
    *,
    cluster: Cluster | None = None,
    checkpoint_metadata: Mapping[str, Any] | None = None,
    network: Mapping[str, Any] | None = None,
) -> float | None:
    """The factor a model's inputs were scaled with in training, as it was stored: a
    checkpoint's metadata or an export's network (`input_scale`, else the one in the `config`
    of the cluster they carry), else the cluster's config (`input_scale`, recorded by its first
    training). Looked up in that order among those given; None when none holds one (callers
    fall back to 1, or to the scale their data need). 0 and missing values count as none."""
    for source in (checkpoint_metadata, network):
        if source:
            value = source.get("input_scale") or (source.get("config") or {}).get("input_scale")
            if value:
                return float(value)
    if cluster is not None:
        value = (cluster.config or {}).get("input_scale")
        if value:
            return float(value)
    return None
