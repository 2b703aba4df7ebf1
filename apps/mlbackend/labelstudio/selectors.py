"""Reads of the Label Studio half."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.core.exceptions import NotFound
from apps.mlbackend.models import LabelStudioAnnotation, LabelStudioBackend, LabelStudioModelVersion


def backend_for_gateway(backend_id: str) -> LabelStudioBackend:
    """The backend Label Studio addresses at `/ml/<backend_id>/`, or NotFound.

    The gateway has no Orchard user: the backend id (and its Basic credentials, checked next by
    `auth.backend_authenticate`) is the whole scope, and everything after this call only
    touches this backend's rows.
    """
    # One query, its model joined (/predict and /setup read it; the join costs /health nothing
    # it would notice); its checkpoint and owner load lazily on the routes that use them.
    try:
        return LabelStudioBackend.objects.select_related("cluster").get(pk=str(backend_id))
    except LabelStudioBackend.DoesNotExist:
        raise NotFound("ML backend not found.") from None


def served_runs(*, experiment_id: str) -> QuerySet:
    """An experiment's completed runs that kept a best checkpoint, latest first: the first is
    what a backend bound to the experiment serves, the others are versions it can still name."""
    from apps.training.models import TASK_STATE_TO_STATUS, Run, RunStatus

    finished = [state for state, st in TASK_STATE_TO_STATUS.items() if st == RunStatus.COMPLETED]
    return (
        Run.objects.filter(
            experiment_id=experiment_id, task__state__in=finished, best_checkpoint__isnull=False
        )
        .select_related("cluster", "best_checkpoint")
        .order_by("-number", "-created_at")
    )


def with_served_run(queryset: QuerySet[LabelStudioBackend]) -> QuerySet[LabelStudioBackend]:
    """Backends annotated with the run they serve (`served_run_pk`, `served_run_number`; None
    for model-bound ones), so that a list shows every `model_version` in one query."""
    from django.db.models import OuterRef, Subquery

    runs = served_runs(experiment_id=OuterRef("experiment_id")).select_related(None)
    return queryset.annotate(
        served_run_pk=Subquery(runs.values("pk")[:1]),
        served_run_number=Subquery(runs.values("number")[:1]),
    )


def backend_versions(*, backend: LabelStudioBackend) -> QuerySet[LabelStudioModelVersion]:
    """Every trained version of the backend, of all its Label Studio projects."""
    return LabelStudioModelVersion.objects.filter(backend=backend).order_by(
        "ls_project_id", "number"
    )


def version_names(*, backend: LabelStudioBackend, scope=...) -> list[str]:
    """The model versions predictions can name, oldest first: every trained version that kept
    its checkpoint, and the current one (`1.0.0` before any training), of one Label Studio
    project (`scope`: the backend itself for its first project, the default; a
    LabelStudioProject row; or None for a project it does not serve yet). An experiment-bound backend names its
    experiment's completed runs (`0.0.0` while there is none)."""
    from apps.mlbackend.models.labelstudio import (
        NO_RUN_VERSION,
        LabelStudioProject,
        model_version_name,
        run_version_name,
    )

    if backend.experiment_id is not None:
        runs = served_runs(experiment_id=backend.experiment_id).select_related(None)
        names = [run_version_name(n, pk) for pk, n in runs.values_list("pk", "number")]
        return names[::-1] or [NO_RUN_VERSION]
    if scope is None:
        return [model_version_name(0)]
    if scope is ...:
        scope = backend
    numbers = backend_versions(backend=backend).filter(checkpoint__isnull=False)
    if isinstance(scope, LabelStudioProject):
        numbers = numbers.filter(ls_project=scope)
    else:
        numbers = numbers.filter(ls_project__isnull=True)
    return [
        model_version_name(n)
        for n in sorted({*numbers.values_list("number", flat=True), scope.version})
    ]


def annotation_list(*, backend: LabelStudioBackend) -> QuerySet[LabelStudioAnnotation]:
    return LabelStudioAnnotation.objects.filter(backend=backend).order_by("annotation_id")
