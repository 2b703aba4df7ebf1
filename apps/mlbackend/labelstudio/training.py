"""The Label Studio gateway's annotations and training: annotations stored from webhooks or read
from Label Studio, training runs enqueued on the job engine (/webhook, /train) and their status,
and the versions they record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import transaction

from apps.core.exceptions import (
    TrainingInProgress,
    ValidationFailed,
)
from apps.mlbackend.labelstudio.connect import ls_project_key
from apps.mlbackend.labelstudio.label_config import Interface
from apps.mlbackend.labelstudio.services import (
    TRAIN_EVENTS,
    TRAIN_KIND,
    Scope,
    _pending_training,
    _require_cluster,
    _require_trainable,
    _scope_key,
    _stored_interface,
    scope_for,
)
from apps.mlbackend.models import (
    LabelStudioAnnotation,
    LabelStudioBackend,
    LabelStudioModelVersion,
    LabelStudioProject,
)
from apps.mlbackend.models.labelstudio import model_version_name

if TYPE_CHECKING:
    from apps.accounts.models import User
    from apps.clusters.models import Cluster
    from apps.tasks.models import Task


def spans_of(result: Any, interface: Interface) -> list[tuple[int, int, str]]:
    """The entity spans `(start, end, label)` of the interface's Labels control in a result."""
    spans = []
    for region in result if isinstance(result, list) else []:
        if not isinstance(region, dict) or region.get("type") != "labels":
            continue
        if region.get("from_name") != interface.from_name:
            continue
        value = region.get("value")
        if not isinstance(value, dict):
            continue
        start, end, labels = value.get("start"), value.get("end"), value.get("labels")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
            continue
        if isinstance(labels, list) and labels and isinstance(labels[0], str) and start < end:
            spans.append((start, end, labels[0][:500]))
    return spans


def rectangles_of(
    result: Any, interface: Interface
) -> list[tuple[float, float, float, float, str]]:
    """The rectangles `(x, y, width, height, label)` (percent) of the interface's
    RectangleLabels control in a result (rotated ones are taken unrotated)."""
    found = []
    for region in result if isinstance(result, list) else []:
        if not isinstance(region, dict) or region.get("type") != "rectanglelabels":
            continue
        if region.get("from_name") != interface.from_name:
            continue
        value = region.get("value")
        if not isinstance(value, dict):
            continue
        numbers = [value.get(k) for k in ("x", "y", "width", "height")]
        labels = value.get("rectanglelabels")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
            continue
        if not (isinstance(labels, list) and labels and isinstance(labels[0], str)):
            continue
        x, y, width, height = (float(v) for v in numbers)
        if width > 0 and height > 0:
            found.append((x, y, width, height, labels[0][:500]))
    return found


def label_of(result: Any, interface: Interface | None) -> str:
    """The chosen label of the backend's control in an annotation result ("" when none); for
    named entities, the label of its first span."""
    if not isinstance(result, list):
        return ""
    if interface is not None and interface.kind == "ner":
        spans = spans_of(result, interface)
        return spans[0][2] if spans else ""
    if interface is not None and interface.kind == "detection":
        rectangles = rectangles_of(result, interface)
        return rectangles[0][4] if rectangles else ""
    for region in result:
        if not isinstance(region, dict) or region.get("type", "choices") != "choices":
            continue
        if interface is not None and region.get("from_name") != interface.from_name:
            continue
        choices = (
            (region.get("value") or {}).get("choices")
            if isinstance(region.get("value"), dict)
            else None
        )
        if isinstance(choices, list) and choices and isinstance(choices[0], str):
            return choices[0][:500]
    return ""


LS_ID_MAX = 2**63 - 1  # Label Studio's ids are 64-bit integers (and so are the columns here)


def _ls_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LS_ID_MAX:
        raise ValidationFailed(f"{what} must be an integer id.")
    return value


def annotation_upsert(
    *,
    backend: LabelStudioBackend,
    annotation: Any,
    task: Any,
    ls_project: str,
    interface: Interface | None,
) -> LabelStudioAnnotation:
    """Store (or update) one Label Studio annotation with its task's data."""
    if not isinstance(annotation, dict):
        raise ValidationFailed("`annotation` must be an object.")
    annotation_id = _ls_id(annotation.get("id"), "annotation.id")
    task = task if isinstance(task, dict) else {}
    task_id = annotation.get("task", task.get("id"))
    if isinstance(task_id, dict):  # the export nests nothing here, but be lenient
        task_id = task_id.get("id")
    try:
        task_id = _ls_id(task_id, "task.id")
    except ValidationFailed:
        task_id = None  # lenient: the task's id only labels the annotation
    result = annotation.get("result") or []
    if not isinstance(result, list):
        raise ValidationFailed("annotation.result must be a list.")
    defaults: dict[str, Any] = {
        "task_id": task_id,
        "ls_project": ls_project,
        "result": result,
        "label": label_of(result, interface),
        "was_cancelled": bool(annotation.get("was_cancelled", False)),
    }
    if isinstance(task.get("data"), dict):
        defaults["task_data"] = task["data"]
    row, _ = LabelStudioAnnotation.objects.update_or_create(
        backend=backend, annotation_id=annotation_id, defaults=defaults
    )
    return row


def scope_annotations(backend: LabelStudioBackend, scope: Scope):
    """The stored annotations of the scope's Label Studio project (the backend's first project
    also owns those that named no project, and those stored before projects were kept apart)."""
    from django.db.models import Q

    if isinstance(scope, LabelStudioProject):
        key = scope.ls_project
        return backend.annotations.filter(Q(ls_project=key) | Q(ls_project__startswith=f"{key}."))
    others = list(
        LabelStudioProject.objects.filter(backend=backend).values_list("ls_project", flat=True)
    )
    rows = backend.annotations.all()
    for key in others:
        rows = rows.exclude(Q(ls_project=key) | Q(ls_project__startswith=f"{key}."))
    return rows


@transaction.atomic
def backend_webhook(*, backend: LabelStudioBackend, payload: Any) -> tuple[int, dict[str, Any]]:
    """`/webhook`: store/delete annotations or start training; (HTTP status, answer)."""
    if not isinstance(payload, dict):
        raise ValidationFailed("The webhook body must be a JSON object.")
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise ValidationFailed.for_field("action", "is required.")
    if action not in TRAIN_EVENTS:
        return 200, {"status": "Unknown event"}
    key = ls_project_key(payload.get("project"))
    if action in ("ANNOTATIONS_DELETED", "ANNOTATION_DELETED"):
        items = payload.get("annotations")
        if action == "ANNOTATION_DELETED" or items is None:
            items = [payload.get("annotation")]
        if not isinstance(items, list):
            raise ValidationFailed("`annotations` must be a list.")
        ids = [
            _ls_id((a or {}).get("id") if isinstance(a, dict) else None, "annotation id")
            for a in items
        ]
        deleted, _ = LabelStudioAnnotation.objects.filter(
            backend=backend, annotation_id__in=ids
        ).delete()
        return 201, {"result": {"deleted": deleted}, "status": "ok"}
    scope = scope_for(backend, key)
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        row = annotation_upsert(
            backend=backend,
            annotation=payload.get("annotation"),
            task=payload.get("task"),
            ls_project=_scope_key(backend, scope) or key,
            interface=_stored_interface(scope),
        )
        result: dict[str, Any] = {
            "annotation_id": row.annotation_id,
            "label": row.label,
            "annotations": scope_annotations(backend, scope).count(),
        }
        if backend.train_on_annotation and row.label and backend.experiment_id is None:
            task, _created = backend_train_start(backend=backend, actor=backend.owner, scope=scope)
            result["job"] = str(task.pk)
        return 201, {"result": result, "status": "ok"}
    task, _created = backend_train_start(backend=backend, actor=backend.owner, scope=scope)
    return 201, {
        "result": {"job": str(task.pk), "model_version": scope.model_version},
        "status": "ok",
    }


@transaction.atomic
def backend_train_legacy(*, backend: LabelStudioBackend, payload: Any) -> dict[str, Any]:
    """Old `/train`: tasks with their annotations -> store them, start training -> {"job"}."""
    if not isinstance(payload, dict):
        raise ValidationFailed("The body must be a JSON object.")
    _require_trainable(backend)
    tasks = payload.get("annotations")
    if not isinstance(tasks, list) or not tasks:
        raise ValidationFailed("No annotations found.")
    key = ls_project_key(payload.get("project"))
    scope = scope_for(backend, key)
    interface = _stored_interface(scope)
    for task in tasks:
        if not isinstance(task, dict):
            raise ValidationFailed("Each item of `annotations` must be a task object.")
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            raise ValidationFailed("Each task's `annotations` must be a list.")
        for annotation in annotations:
            annotation_upsert(
                backend=backend,
                annotation=annotation,
                task=task,
                ls_project=_scope_key(backend, scope) or key,
                interface=interface,
            )
    task, _created = backend_train_start(backend=backend, actor=backend.owner, scope=scope)
    return {"job": str(task.pk)}


def _can_fetch_annotations(backend: LabelStudioBackend, scope: Scope) -> bool:
    key = _scope_key(backend, scope) or ls_project_key(backend.ls_project, stored=True)
    return bool(scope.label_studio_url and scope.access_token and key.isdigit())


def backend_train_start(
    *,
    backend: LabelStudioBackend,
    actor: User | None,
    reuse_pending: bool = True,
    scope: Scope | None = None,
) -> tuple[Task, bool]:
    """Enqueue a training task for one Label Studio project of the backend (by default its
    first); (task, created).

    The run trains on the project's annotations stored from webhooks and on those it reads from
    Label Studio's API when it starts (see handlers.py). A scope trains one run at a time: with
    `reuse_pending` the queued or active run is answered instead (Label Studio's button may be
    pressed twice), otherwise TrainingInProgress. Refuses (ValidationFailed) when no stored
    annotation has a label of the project's config and Label Studio's API cannot be asked, and
    (Conflict) an experiment-bound backend: its runs are trained in the training studio.
    """
    from apps.clusters.services import cluster_task_create

    _require_trainable(backend)
    scope = scope or backend
    cluster = _require_cluster(scope)
    with transaction.atomic():
        locked = LabelStudioBackend.objects.select_for_update().get(pk=backend.pk)
        if isinstance(scope, LabelStudioBackend):
            backend = scope = locked
        else:
            scope.refresh_from_db()
        pending = next(iter(_pending_training(backend, scope)), None)
        if pending is not None:
            if reuse_pending:
                return pending, False
            raise TrainingInProgress("This backend is already training.")
        interface = _stored_interface(scope)
        if interface is None:
            raise ValidationFailed("This backend has no label config yet: call /setup first.")
        usable = any(
            label_of(row.result, interface) in interface.labels
            for row in scope_annotations(backend, scope)
            .filter(was_cancelled=False)
            .only("id", "result")
        )
        if not usable and not _can_fetch_annotations(backend, scope):
            raise ValidationFailed("No annotations found.")
        params: dict[str, Any] = {"backend_id": backend.pk}
        if _scope_key(backend, scope):
            params["ls_project"] = _scope_key(backend, scope)
        task = cluster_task_create(
            project=backend.project,
            actor=actor,
            kind=TRAIN_KIND,
            name=f"Label Studio: {backend.name}"[:200],
            cluster=cluster,
            params=params,
        )
    return task, True


def backend_training_status(*, backend: LabelStudioBackend, project: Any = None) -> dict[str, Any]:
    """`/is_training`: whether a run is queued or active, and the latest run's state."""
    from apps.tasks.models import Task

    scope = scope_for(backend, project, create=False) or backend
    key = _scope_key(backend, scope)
    runs = Task.objects.filter(
        kind=TRAIN_KIND, project_id=backend.project_id, params__backend_id=backend.pk
    ).order_by("-created_at")
    latest = None
    for task in runs.only("id", "state", "progress", "error", "params")[:200]:
        if (task.params or {}).get("ls_project", "") == key:
            latest = task
            break
    pending = latest is not None and not latest.is_terminal
    return {
        "is_training": pending,
        "model_version": scope.model_version,
        "job": str(latest.pk) if latest else None,
        "status": latest.state if latest else None,
        "progress": latest.progress if latest else None,
    }


def version_record(
    *,
    backend: LabelStudioBackend,
    cluster: Cluster,
    model,
    actor: User | None,
    task: Task | None,
    labels: list[str],
    metrics: dict[str, Any],
    scope: Scope | None = None,
) -> LabelStudioModelVersion:
    """Store trained weights as the scope's next version (by default the backend's first
    project): the model's weights, a checkpoint, a version row, and the scope pointing at it."""
    from apps.clusters.runtime import cluster_store_weights
    from apps.clusters.services import checkpoint_save

    scope = scope or backend
    with transaction.atomic():
        locked = type(scope).objects.select_for_update().get(pk=scope.pk)
        number = locked.version + 1
        cluster_store_weights(cluster, model)
        suffix = f" project {locked.ls_project}" if isinstance(locked, LabelStudioProject) else ""
        checkpoint = checkpoint_save(
            cluster=cluster,
            actor=actor,
            name=f"{backend.name}{suffix} {model_version_name(number)}"[:200],
        )
        row = LabelStudioModelVersion.objects.create(
            backend=backend,
            ls_project=locked if isinstance(locked, LabelStudioProject) else None,
            number=number,
            checkpoint=checkpoint,
            task=task,
            labels=labels,
            metrics=metrics,
        )
        locked.version = number
        locked.checkpoint = checkpoint
        locked.save(update_fields=["version", "checkpoint", "updated_at"])
    return row
