"""Writes of exports: create one (the row and its "export" task, enqueued on commit), delete one
with its file, and the worker's updates of the row (running, completed, failed)."""

from __future__ import annotations

import re
import shutil
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from apps.exports.formats import FORMATS, normalize_options
from apps.exports.models import Export, ExportSourceKind, ExportStatus
from apps.exports.selectors import ExportSource, export_dir, network_sample_shape

if TYPE_CHECKING:
    from apps.accounts.models import Project, User

EXPORT_TASK_KIND = "export"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def download_filename(name: str, fmt: str) -> str:
    """A plain ASCII file name for the download: the export's name and the format's extension."""
    stem = _UNSAFE.sub("-", name).strip("-.")[:100] or "model"
    return f"{stem}{FORMATS[fmt].extension}"


@transaction.atomic
def export_create(
    *,
    project: Project,
    actor: User | None,
    source: ExportSource,
    fmt: str,
    options: dict[str, Any] | None = None,
    name: str | None = None,
    visibility: str | None = None,
) -> Export:
    """Create an export of `source` and queue its task (which writes the file and checks it).

    The options are validated against the source's network (ValidationFailed naming the option);
    an export of a cluster runs after the cluster's earlier tasks (e.g. its training).
    """
    from apps.clusters.services import cluster_task_create
    from apps.tasks.services import task_create

    normalized = normalize_options(fmt, options, sample_shape=network_sample_shape(source.network))
    name = (name or f"{source.name}-{fmt}")[:200]
    fields: dict[str, Any] = {"visibility": visibility} if visibility else {}
    export = Export.objects.create(
        project=project,
        owner=actor,
        name=name,
        format=fmt,
        options=normalized,
        source_kind=source.kind,
        cluster=source.cluster if source.kind == ExportSourceKind.CLUSTER else None,
        checkpoint=source.checkpoint,
        experiment_id=source.experiment_id,
        run_id=source.run_id,
        run_checkpoint=source.run_checkpoint,
        network=source.network,
        details={"hints": source.hints} if source.hints else {},
        filename=download_filename(name, fmt),
        **fields,
    )
    task_fields: dict[str, Any] = {
        "project": project,
        "actor": actor,
        "kind": EXPORT_TASK_KIND,
        "name": f"export {name}"[:200],
        "params": {"export_id": export.pk},
        "visibility": export.visibility,
    }
    if export.cluster is not None:
        export.task = cluster_task_create(cluster=export.cluster, **task_fields)
    else:
        export.task = task_create(**task_fields)
    export.save(update_fields=["task", "updated_at"])
    return export


def export_delete(*, export: Export) -> None:
    """Delete an export and its file; a queued or running export task is aborted first."""
    from apps.tasks.models import PENDING_STATES
    from apps.tasks.services import task_abort

    task = export.task
    if task is not None and task.state in PENDING_STATES:
        task_abort(task=task)
    directory = export_dir(export)
    export.delete()
    transaction.on_commit(lambda: shutil.rmtree(directory, ignore_errors=True))


# --- the worker's updates ------------------------------------------------------------------------


def export_mark_running(*, export: Export) -> bool:
    """pending/running -> running (a re-queued task runs again); False when the row is gone."""
    now = timezone.now()
    return bool(
        Export.objects.filter(
            pk=export.pk, status__in=[ExportStatus.PENDING, ExportStatus.RUNNING]
        ).update(status=ExportStatus.RUNNING, started_at=now, error="", updated_at=now)
    )


def export_complete(
    *,
    export: Export,
    file: str,
    size_bytes: int,
    sha256: str,
    parity: dict[str, Any],
    notes: list[str],
    details: dict[str, Any],
) -> bool:
    """Record the written, checked file: the export becomes downloadable. False: row gone."""
    now = timezone.now()
    return bool(
        Export.objects.filter(pk=export.pk, status=ExportStatus.RUNNING).update(
            status=ExportStatus.COMPLETED,
            file=file,
            size_bytes=size_bytes,
            sha256=sha256,
            parity=parity,
            notes=notes,
            details=details,
            error="",
            finished_at=now,
            updated_at=now,
        )
    )


def export_fail(
    *,
    export: Export,
    error: str,
    status: str = ExportStatus.FAILED,
    parity: dict[str, Any] | None = None,
    notes: list[str] | None = None,
    details: dict[str, Any] | None = None,
) -> bool:
    """End an export failed (or aborted) with the reason; it never offers a file."""
    now = timezone.now()
    fields: dict[str, Any] = {
        "status": status,
        "error": error[:10000],
        "file": "",
        "size_bytes": 0,
        "sha256": "",
        "finished_at": now,
        "updated_at": now,
    }
    for key, value in (("parity", parity), ("notes", notes), ("details", details)):
        if value is not None:
            fields[key] = value
    return bool(
        Export.objects.filter(
            pk=export.pk, status__in=[ExportStatus.PENDING, ExportStatus.RUNNING]
        ).update(**fields)
    )
