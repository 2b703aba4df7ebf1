"""The console pages. Every page resolves its object's project with `console_access` (global
admins: any project; project admins: theirs; anything else 404, like a missing object), then
reads through the owning app's selectors. Charts are SVG images (`apps.console.charts`),
pictures of tensor data PNG (`apps.console.images`); live pages fetch a short-lived access token
(`console_token`) and listen on the task websocket or the run's SSE stream. The dataset pages are
in `apps.console.dataset_views`."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.console import charts
from apps.console import selectors as console_selectors
from apps.console.access import console_access
from apps.core.conf import number_setting
from apps.core.exceptions import Forbidden, NotFound, OrchardError

SVG = "image/svg+xml"
PAGE_SIZE = 48
MAX_COMPARED = 8
WORST_ERRORS = 16


# --- plumbing ----------------------------------------------------------------------------------


def _resolve(request, model, pk, get):
    """(access, object): the object's project must be one the caller administers; `get(access)`
    then reads it through the app's selector. 404 for missing, foreign and malformed ids, and
    for one `get` fetches to change that the caller may not change."""
    try:
        project_id = model.objects.filter(pk=pk).values_list("project_id", flat=True).first()
    except (ValueError, TypeError, ValidationError):
        project_id = None
    if project_id is None:
        raise Http404("Not found.")
    try:
        access = console_access(request.user, project_id)
        return access, get(access)
    except (NotFound, Forbidden):
        raise Http404("Not found.") from None


def _page(request, site, template: str, title: str, **context) -> TemplateResponse:
    return TemplateResponse(
        request,
        f"console/{template}",
        {**site.each_context(request), "title": title, "subtitle": None, **context},
    )


def _svg(markup: str) -> HttpResponse:
    response = HttpResponse(markup, content_type=SVG)
    response["Cache-Control"] = "no-store"
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response


def _png(data: bytes | None) -> HttpResponse:
    if data is None:
        raise Http404("This sample has no picture.")
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = "private, max-age=300"
    return response


def _int(value, default: int | None = None) -> int | None:
    text = str(value) if value is not None else ""
    return int(text) if text.isdigit() and len(text) < 10 else default


# --- token for live pages ------------------------------------------------------------------------


@never_cache
@require_POST
def console_token(request, site):
    """A short-lived access token (CONSOLE_TOKEN_MINUTES) for the console's own websocket and
    SSE connections, handed to the logged-in user of a project they administer (POST + CSRF)."""
    from rest_framework_simplejwt.tokens import AccessToken

    try:
        console_access(request.user, request.POST.get("project", ""))
    except NotFound:
        raise Http404("Not found.") from None
    token = AccessToken.for_user(request.user)
    minutes = number_setting("CONSOLE_TOKEN_MINUTES")
    token.set_exp(lifetime=timedelta(minutes=max(1.0, minutes)))
    return JsonResponse({"token": str(token), "expires_in": int(max(1.0, minutes) * 60)})


# --- runs ----------------------------------------------------------------------------------------

_RUN_CHARTS = {
    "loss": (("train loss", "loss", ""), ("val loss", "val_loss", "4 3")),
    "accuracy": (("train accuracy", "accuracy", ""), ("val accuracy", "val_accuracy", "4 3")),
}


def _run(request, run_id):
    from apps.training import selectors
    from apps.training.models import Run

    return _resolve(request, Run, run_id, lambda a: selectors.run_get(access=a, run_id=run_id))


def run_detail(request, site, run_id):
    from apps.training import selectors

    access, run = _run(request, run_id)
    history = console_selectors.run_history(run=run)
    runs = list(selectors.run_list(access=access, experiment=run.experiment)[:50])
    return _page(
        request,
        site,
        "run.html",
        f"Run {run.number} of {run.experiment.name}",
        run=run,
        project=access.project,
        max_epochs=int((run.config or {}).get("epochs", 0) or 0),
        history=history[-200:],
        charts=list(_RUN_CHARTS),
        sibling_runs=runs,
        stream_url=f"/api/training/{access.project.pk}/runs/{run.pk}/stream",
    )


def run_chart(request, site, run_id, metric):
    if metric not in _RUN_CHARTS:
        raise Http404("Unknown chart.")
    _access, run = _run(request, run_id)
    history = console_selectors.run_history(run=run)
    series = [
        (label, [(h.get("epoch"), h.get(key)) for h in history], dash)
        for label, key, dash in _RUN_CHARTS[metric]
    ]
    return _svg(charts.line_chart(series, title=metric, **_range(metric, series)))


def _range(metric: str, series) -> dict[str, Any]:
    values = [y for _, pts, _ in series for _, y in pts if isinstance(y, int | float)]
    if metric == "accuracy" and values and max(values) <= 1.0:
        return {"y_min": 0.0, "y_max": 1.0}
    return {}


def _compared(request, access, experiment):
    from apps.training import selectors

    runs = selectors.run_list(access=access, experiment=experiment)
    wanted = [str(r) for r in request.GET.getlist("runs")][:MAX_COMPARED]
    if wanted:
        chosen = {r.pk: r for r in runs.filter(pk__in=wanted)}
        return [chosen[pk] for pk in wanted if pk in chosen]
    return list(runs[:5])


def _experiment(request, exp_id):
    from apps.training import selectors
    from apps.training.models import Experiment

    return _resolve(
        request, Experiment, exp_id, lambda a: selectors.experiment_get(access=a, exp_id=exp_id)
    )


def compare(request, site, exp_id):
    from apps.training import selectors

    access, experiment = _experiment(request, exp_id)
    runs = _compared(request, access, experiment)
    keys = sorted({k for r in runs for k in (r.config or {})})
    rows = []
    for key in keys:
        values = [(r.config or {}).get(key) for r in runs]
        shown = [json.dumps(v, sort_keys=True, default=str) for v in values]
        rows.append({"key": key, "values": shown, "differs": len(set(shown)) > 1})
    rows.sort(key=lambda r: (not r["differs"], r["key"]))
    query = "&".join(f"runs={r.pk}" for r in runs)
    return _page(
        request,
        site,
        "compare.html",
        f"Compare runs of {experiment.name}",
        experiment=experiment,
        project=access.project,
        runs=runs,
        all_runs=list(selectors.run_list(access=access, experiment=experiment)[:50]),
        config_rows=rows,
        charts=list(_RUN_CHARTS),
        query=query,
    )


def compare_chart(request, site, exp_id, metric):
    if metric not in _RUN_CHARTS:
        raise Http404("Unknown chart.")
    access, experiment = _experiment(request, exp_id)
    series = []
    for run in _compared(request, access, experiment):
        history = console_selectors.run_history(run=run)
        for label, key, dash in _RUN_CHARTS[metric]:
            points = [(h.get("epoch"), h.get(key)) for h in history]
            series.append((f"run {run.number} {label.split()[0]}", points, dash))
    return _svg(
        charts.line_chart(series, title=f"{metric} by run", **_range(metric, series), width=640)
    )


# --- evaluations ---------------------------------------------------------------------------------


def _evaluation(request, eval_id):
    from apps.training import selectors
    from apps.training.models import Evaluation

    return _resolve(
        request,
        Evaluation,
        eval_id,
        lambda a: selectors.evaluation_get(access=a, eval_id=eval_id),
    )


def _worst_errors(access, evaluation) -> list[dict[str, Any]]:
    """The most confident mistakes, each with a picture URL (thumbnail or rendered sample)."""
    from apps.datasets.models import Dataset, DatasetItem
    from apps.training import selectors

    try:
        rows = selectors.evaluation_items(
            evaluation=evaluation, sort_by="error", sort_order="desc", filter_correct=False
        )[:WORST_ERRORS]
    except OrchardError:
        return []
    dataset_id = evaluation.dataset_id or evaluation.experiment.dataset_id
    dataset = Dataset.objects.visible_to(access).filter(pk=dataset_id).first()
    thumbs = {}
    if dataset is not None and dataset.kind == Dataset.Kind.IMAGES:
        names = [r["filename"] for r in rows]
        thumbs = dict(
            DatasetItem.objects.filter(dataset=dataset, filename__in=names).values_list(
                "filename", "pk"
            )
        )
    for row in rows:
        row["picture"] = None
        if dataset is None:
            continue
        if dataset.kind == Dataset.Kind.IMAGES:
            pk = thumbs.get(row["filename"])
            if pk is not None:
                row["picture"] = reverse("admin:console-dataset-thumb", args=[dataset.pk, pk])
        else:
            row["picture"] = reverse(
                "admin:console-dataset-sample", args=[dataset.pk, row["index"]]
            )
    return rows


def per_class_rows(results: dict) -> list[dict[str, Any]]:
    """`results["per_class"]` as rows in class order, whether stored as a list of rows (with
    `name`) or as a mapping keyed by class name (ordered by `classes`)."""
    per_class = results.get("per_class") or []
    if isinstance(per_class, dict):
        order = [str(c) for c in results.get("classes") or []] or list(per_class)
        rows = [{"name": name, **(per_class.get(name) or {})} for name in order]
        rows += [{"name": n, **v} for n, v in per_class.items() if n not in order]
        return [r for r in rows if isinstance(r, dict)]
    return [
        {**row, "name": str(row.get("name", row.get("class", i)))}
        for i, row in enumerate(per_class)
        if isinstance(row, dict)
    ]


def evaluation_detail(request, site, eval_id):
    access, evaluation = _evaluation(request, eval_id)
    results = evaluation.results or {}
    return _page(
        request,
        site,
        "evaluation.html",
        f"Evaluation {evaluation.name or evaluation.pk}",
        evaluation=evaluation,
        project=access.project,
        results=results,
        per_class=per_class_rows(results),
        has_matrix=bool(results.get("confusion_matrix")),
        errors=_worst_errors(access, evaluation),
    )


def evaluation_confusion(request, site, eval_id):
    _access, evaluation = _evaluation(request, eval_id)
    results = evaluation.results or {}
    labels = [row["name"] for row in per_class_rows(results)]
    matrix = results.get("confusion_matrix") or []
    return _svg(charts.heatmap(matrix, labels, title="confusion matrix (rows: true class)"))


# --- tasks ---------------------------------------------------------------------------------------


def _task(request, task_id, *, for_edit: bool = False):
    from apps.tasks.models import Task

    return _resolve(
        request,
        Task,
        task_id,
        lambda a: Task.objects.select_related("project").get_visible(
            a, for_edit=for_edit, pk=task_id
        ),
    )


def task_detail(request, site, task_id):
    from apps.tasks.models import TERMINAL_STATES, TaskEvent, TaskState

    access, task = _task(request, task_id)
    events = list(TaskEvent.objects.filter(task=task).order_by("-seq")[:50])[::-1]
    run = getattr(task, "studio_run", None) if task.kind == "studio_train" else None
    return _page(
        request,
        site,
        "task.html",
        f"Task {task.name}",
        task=task,
        project=access.project,
        events=events,
        last_seq=events[-1].seq if events else 0,
        run=run,
        can_edit=access.can_edit(task),
        can_abort=task.state not in TERMINAL_STATES and access.can_edit(task),
        can_retry=task.state in (TaskState.FAILED, TaskState.ABORTED) and access.can_edit(task),
        progress_percent=round(task.progress * 100),
    )


def _task_action(request, task_id, action) -> HttpResponse:
    from apps.tasks import services

    _, task = _task(request, task_id, for_edit=True)
    try:
        if action == "abort":
            services.task_abort(task=task)
            messages.success(request, "Abort requested.")
        else:
            services.task_retry(task=task)
            messages.success(request, "The task is queued again.")
    except OrchardError as exc:
        messages.error(request, exc.message)
    return redirect(reverse("admin:console-task", args=[task.pk]))


@require_POST
def task_abort(request, site, task_id):
    return _task_action(request, task_id, "abort")


@require_POST
def task_retry(request, site, task_id):
    return _task_action(request, task_id, "retry")


# --- Label Studio backends -----------------------------------------------------------------------


def backend_detail(request, site, backend_id):
    from apps.mlbackend.labelstudio import selectors
    from apps.mlbackend.models import LabelStudioBackend

    access, backend = _resolve(
        request,
        LabelStudioBackend,
        backend_id,
        lambda a: LabelStudioBackend.objects.select_related(
            "cluster", "experiment", "checkpoint"
        ).get_visible(a, pk=str(backend_id)),
    )
    annotations = selectors.annotation_list(backend=backend)
    totals = annotations.aggregate(
        total=Count("pk"), cancelled=Count("pk", filter=Q(was_cancelled=True))
    )
    by_label = list(
        annotations.filter(was_cancelled=False)
        .values("label")
        .annotate(count=Count("pk"))
        .order_by("-count", "label")[:50]
    )
    return _page(
        request,
        site,
        "backend.html",
        f"Label Studio backend {backend.name}",
        backend=backend,
        project=access.project,
        url=request.build_absolute_uri(f"/ml/{backend.pk}/"),
        versions=list(selectors.backend_versions(backend=backend).select_related("checkpoint")),
        version_names=selectors.version_names(backend=backend),
        totals=totals,
        by_label=by_label,
    )
