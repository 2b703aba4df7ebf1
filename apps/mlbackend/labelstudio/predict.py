"""The Label Studio gateway's /predict: the weights a request names (a backend's run or a
trained version of its project) and the predictions of text spans, boxes or labels, in the
protocol's shapes."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from django.utils import timezone

from apps.core.conf import number_setting
from apps.core.exceptions import (
    Conflict,
    ValidationFailed,
)
from apps.mlbackend.labelstudio import runtime
from apps.mlbackend.labelstudio.batch import batch_inputs, predict_deadline
from apps.mlbackend.labelstudio.features import ModelSpec
from apps.mlbackend.labelstudio.label_config import Interface
from apps.mlbackend.labelstudio.services import (
    MAX_ERRORS_KEPT,
    Scope,
    _interface,
    _require_cluster,
    fetch_policy,
    scope_for,
)
from apps.mlbackend.models import (
    LabelStudioBackend,
    LabelStudioModelVersion,
    LabelStudioProject,
)

if TYPE_CHECKING:
    from apps.clusters.models import Checkpoint, Cluster
    from apps.training.models import Run

logger = logging.getLogger(__name__)


def _versions_of(backend: LabelStudioBackend, scope: Scope):
    rows = LabelStudioModelVersion.objects.filter(backend=backend)
    if isinstance(scope, LabelStudioProject):
        return rows.filter(ls_project=scope)
    return rows.filter(ls_project__isnull=True)


def _version_weights(backend: LabelStudioBackend, scope: Scope, requested: Any):
    """(checkpoint, version name) to predict with: a requested known version, else the current."""
    if isinstance(requested, str) and requested != scope.model_version:
        parts = requested.split(".")
        if len(parts) == 3 and parts[0] == "1" and parts[1].isdigit():
            row = (
                _versions_of(backend, scope)
                .select_related("checkpoint")
                .filter(number=int(parts[1]), checkpoint__isnull=False)
                .first()
            )
            if row is not None:
                return row.checkpoint, row.name
    return scope.checkpoint, scope.model_version


def _run_weights(backend: LabelStudioBackend, requested: Any) -> tuple[Cluster, Checkpoint, str]:
    """(model, checkpoint, version name) of an experiment-bound backend: the best checkpoint of
    a requested run version still served, else of the experiment's latest completed run;
    Conflict when there is none or its model or checkpoint is gone."""
    from apps.core.exceptions import NotFound
    from apps.mlbackend.labelstudio.selectors import served_runs
    from apps.mlbackend.models.labelstudio import run_version_name
    from apps.training.selectors import run_checkpoint_get

    run: Run | None = None
    if isinstance(requested, str) and requested != backend.model_version:
        _head, _sep, run_id = requested.partition("-")
        if run_id:
            run = served_runs(experiment_id=backend.experiment_id).filter(pk=run_id).first()
    run = run or backend.served_run
    if run is None:
        experiment = backend.experiment
        raise Conflict(
            f"The experiment {experiment.name!r} has no completed run yet: start one in the "
            "training studio; this backend predicts with the best checkpoint of its latest "
            "completed run."
            if experiment is not None
            else "This ML backend has no experiment any more; bind a model or an experiment."
        )
    if run.cluster is None:
        raise Conflict(f"The model of run {run.number} of the experiment was deleted.")
    try:
        checkpoint = run_checkpoint_get(run=run, which="best")
    except NotFound:
        raise Conflict(f"Run {run.number} of the experiment has no best checkpoint.") from None
    return run.cluster, checkpoint, run_version_name(run.number, run.pk)


def _record_predict(scope: Scope, tasks: list[Any], errors: dict[int, str], seconds: float):
    """Keep the batch's figures and its failed tasks (with their reasons) on the scope, where
    the main API shows them (`last_predict`), and log the failures."""
    failed = []
    for index, error in sorted(errors.items()):
        task = tasks[index]
        task_id = task.get("id") if isinstance(task, dict) else None
        failed.append({"task_id": task_id if isinstance(task_id, int) else None, "error": error})
    if failed:
        logger.warning(
            "Label Studio backend %s: %d of %d tasks got no prediction (first: task %s: %s)",
            scope.pk,
            len(failed),
            len(tasks),
            failed[0]["task_id"],
            failed[0]["error"],
        )
    report = {
        "at": timezone.now().isoformat(),
        "tasks": len(tasks),
        "predicted": len(tasks) - len(failed),
        "failed": len(failed),
        "seconds": round(seconds, 3),
        "errors": failed[:MAX_ERRORS_KEPT],
    }
    type(scope).objects.filter(pk=scope.pk).update(last_predict=report)


def _predict_spans(model, spec: ModelSpec, interface: Interface, tasks: list[Any], version: str):
    """Named entities of every task's text: (one item per task, {index: error}). A text
    without entities gets an empty `result` with its version (it was predicted)."""
    from apps.mlbackend.labelstudio.batch import TaskError, task_value
    from ml.inference import predict_proba
    from ml.ner import spans_from_tokens, tokenize

    errors: dict[int, str] = {}
    texts: dict[int, str] = {}
    for index, task in enumerate(tasks):
        try:
            value = task_value(task, interface, index)
        except TaskError as exc:
            errors[index] = exc.message
            continue
        texts[index] = value if isinstance(value, str) else str(value)
    tokens = {index: tokenize(text) for index, text in texts.items()}
    order = [index for index in sorted(tokens) if tokens[index]]
    probabilities = {}
    if order:
        x = np.concatenate([spec.token_batch(tokens[index]) for index in order])
        rows = predict_proba(model, x)
        offset = 0
        for index in order:
            probabilities[index] = rows[offset : offset + len(tokens[index])]
            offset += len(tokens[index])
    results: list[dict[str, Any]] = []
    for index in range(len(tasks)):
        if index in errors:
            results.append({"result": [], "score": 0.0, "error": errors[index]})
            continue
        spans = (
            spans_from_tokens(texts[index], tokens[index], probabilities[index], interface.labels)
            if index in probabilities
            else []
        )
        regions = [
            {
                "from_name": interface.from_name,
                "to_name": interface.to_name,
                "type": "labels",
                "value": {
                    "start": span["start"],
                    "end": span["end"],
                    "text": span["text"],
                    "labels": [span["label"]],
                },
                "score": span["score"],
            }
            for span in spans
        ]
        score = float(np.mean([span["score"] for span in spans])) if spans else 0.0
        results.append({"result": regions, "score": score, "model_version": version})
    return results, errors


def detection_grid() -> int:
    """Cells per side an image is cut into for detection (`LABELSTUDIO_DETECTION_GRID`)."""
    return max(1, min(32, int(number_setting("LABELSTUDIO_DETECTION_GRID"))))


def _predict_boxes(model, spec, interface, tasks, version, policy, deadline):
    """Rectangles of every task's image: (one item per task, {index: error}); images fetched
    like classification's (`batch.py`), each cut into grid cells the model classifies."""
    from ml.detection import boxes_from_cells, grid_patches
    from ml.inference import predict_proba

    grid = detection_grid()
    x, order, errors = batch_inputs(spec.grid(grid), interface, tasks, policy, deadline=deadline)
    results: list[dict[str, Any]] = [
        {"result": [], "score": 0.0, "error": errors.get(i, "")} for i in range(len(tasks))
    ]
    if x is None:
        return results, errors
    cells = grid * grid
    probabilities = predict_proba(model, np.concatenate([grid_patches(image, grid) for image in x]))
    for n, index in enumerate(order):
        boxes = boxes_from_cells(probabilities[n * cells : (n + 1) * cells], interface.labels, grid)
        regions = [
            {
                "from_name": interface.from_name,
                "to_name": interface.to_name,
                "type": "rectanglelabels",
                "value": {
                    "x": box["x"],
                    "y": box["y"],
                    "width": box["width"],
                    "height": box["height"],
                    "rotation": 0,
                    "rectanglelabels": [box["label"]],
                },
                "score": box["score"],
            }
            for box in boxes
        ]
        score = float(np.mean([box["score"] for box in boxes])) if boxes else 0.0
        results[index] = {"result": regions, "score": score, "model_version": version}
    return results, errors


def backend_predict(
    *,
    backend: LabelStudioBackend,
    tasks: Any,
    label_config: Any = None,
    params: Any = None,
    model_version: Any = None,
    project: Any = None,
) -> dict[str, Any]:
    """`/predict`: one item per task, in order. A task that could be predicted gets a Choices
    region with its score; one that could not (no data, refused or unreadable data, not fetched
    before the batch's deadline) gets an empty `result` and its `error`, and no
    `model_version` (so that Label Studio predicts it again later), while the others of the
    batch keep theirs. Task data is fetched concurrently (see `batch.py`)."""
    from apps.clusters.selectors import stored_input_scale
    from ml.inference import predict_proba

    started = time.monotonic()
    deadline = predict_deadline()
    if not isinstance(tasks, list) or not tasks:
        raise ValidationFailed.for_field("tasks", "must be a non-empty list of tasks.")
    scope = scope_for(backend, project)
    if backend.experiment_id is not None:
        cluster, checkpoint, version = _run_weights(backend, model_version)
        # The studio trained on inputs times this factor (1 for images, which lie in 0..1).
        scale = stored_input_scale(checkpoint_metadata=checkpoint.metadata) or 1.0
    else:
        cluster = _require_cluster(scope)
        checkpoint, version = _version_weights(backend, scope, model_version)
        scale = 1.0
    interface = _interface(scope, label_config)
    spec = ModelSpec.of(cluster)
    spec.check_fits(interface.kind, interface.labels)
    if interface.kind in ("ner", "detection"):
        model = runtime.cached_model(cluster, checkpoint)
        if interface.kind == "ner":
            results, errors = _predict_spans(model, spec, interface, tasks, version)
        else:
            policy = fetch_policy(scope, params)
            results, errors = _predict_boxes(
                model, spec, interface, tasks, version, policy, deadline
            )
        _record_predict(scope, tasks, errors, time.monotonic() - started)
        return {"results": results, "model_version": version}
    x, order, errors = batch_inputs(
        spec, interface, tasks, fetch_policy(scope, params), deadline=deadline
    )
    results: list[dict[str, Any]] = [
        {"result": [], "score": 0.0, "error": errors.get(i, "")} for i in range(len(tasks))
    ]
    if x is not None:
        if scale != 1.0:
            x = x * np.float32(scale)
        probabilities = predict_proba(runtime.cached_model(cluster, checkpoint), x)
        for index, row in zip(order, probabilities, strict=True):
            label = int(row.argmax())
            score = float(row[label])
            results[index] = {
                "result": [
                    {
                        "from_name": interface.from_name,
                        "to_name": interface.to_name,
                        "type": "choices",
                        "value": {"choices": [interface.labels[label]]},
                        "score": score,
                    }
                ],
                "score": score,
                "model_version": version,
            }
    _record_predict(scope, tasks, errors, time.monotonic() - started)
    return {"results": results, "model_version": version}
