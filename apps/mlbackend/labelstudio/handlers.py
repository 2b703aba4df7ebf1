"""The `labelstudio_train` task kind: fit the backend's model on its stored annotations.

Runs on the job engine like every task (queued on the model's host, one run of a model at a
time), for one Label Studio project of the backend (`params.ls_project`; none: its first). It
first reads the project's annotated tasks from Label Studio's API (`connect.py`; webhooks may
never have reached Orchard) and stores them next to those received by webhook (a failed read is
reported and training goes on with the stored ones). It reads the annotations whose label
belongs to the project's label config, turns their task data into inputs (texts featurized,
images fetched under the backend's fetch policy; a task whose data cannot be fetched is skipped
and reported), fits the model from its current weights with the clusters' training service
(`apps.clusters.training`), and records the result as the backend's next version (new weights,
a checkpoint, `model_version` bumped). A stopped run records nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from apps.clusters.training import TrainingCallbacks
from apps.core.exceptions import OrchardError, ValidationFailed
from apps.tasks import registry

MAX_SKIPPED_REPORTED = 20


def validate_train(*, params: dict[str, Any], cluster, dataset) -> None:
    from apps.mlbackend.models import LabelStudioBackend, LabelStudioProject

    unknown = sorted(set(params) - {"backend_id", "ls_project"})
    if unknown:
        raise ValidationFailed.for_field("params", f"Unknown option(s): {', '.join(unknown)}.")
    backend_id, key = params.get("backend_id"), params.get("ls_project")
    if key is None:
        bound = LabelStudioBackend.objects.filter(pk=backend_id, cluster=cluster)
    else:
        bound = LabelStudioProject.objects.filter(
            backend_id=backend_id, ls_project=key, cluster=cluster
        )
    if cluster is None or not isinstance(backend_id, str) or not bound.exists():
        raise ValidationFailed.for_field(
            "params", "backend_id must name a Label Studio backend bound to this cluster."
        )


def training_options(params: dict[str, Any], *, samples: int, device: str) -> dict[str, Any]:
    """The TrainConfig options of a run on `samples` annotations: the backend's train_params
    over the defaults; without `epochs` there, enough epochs for AUTO_MIN_STEPS steps."""
    from apps.mlbackend.labelstudio.services import (
        AUTO_MAX_EPOCHS,
        AUTO_MIN_STEPS,
        TRAIN_DEFAULTS,
    )

    options = {**TRAIN_DEFAULTS, **params, "device": device}
    if "epochs" not in params:
        batch_size = options["batch_size"]
        if isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0:
            batches = max(1, math.ceil(samples / batch_size))
            wanted = math.ceil(AUTO_MIN_STEPS / batches)
            options["epochs"] = max(TRAIN_DEFAULTS["epochs"], min(AUTO_MAX_EPOCHS, wanted))
    return options


def _read_from_label_studio(ctx, backend, scope, interface) -> dict[str, Any]:
    """Store the project's annotated tasks read from Label Studio's API; what happened."""
    from apps.mlbackend.labelstudio.connect import export_annotated_tasks, ls_project_key
    from apps.mlbackend.labelstudio.services import _scope_key, fetch_policy
    from apps.mlbackend.labelstudio.training import annotation_upsert

    key = _scope_key(backend, scope) or ls_project_key(backend.ls_project, stored=True)
    if not (scope.label_studio_url and scope.access_token and key.isdigit()):
        return {"read": 0, "error": "The Label Studio host, token or project is unknown."}
    ctx.progress(0.0, stage="reading annotations from Label Studio")
    try:
        tasks = export_annotated_tasks(policy=fetch_policy(scope), ls_project=key)
    except OrchardError as exc:
        return {"read": 0, "error": exc.message}
    read = 0
    stored_key = _scope_key(backend, scope)
    for task in tasks:
        ctx.check()
        for annotation in task.get("annotations") or []:
            try:
                annotation_upsert(
                    backend=backend,
                    annotation=annotation,
                    task=task,
                    ls_project=stored_key,
                    interface=interface,
                )
            except ValidationFailed:
                continue
            read += 1
    return {"read": read, "error": None}


def _token_set(ctx, backend, scope, interface, spec):
    """(token features, token classes, skipped) of a named-entity project's annotations: every
    token of an annotated text, in the class of the span that covers it (or outside)."""
    from apps.mlbackend.labelstudio.training import scope_annotations, spans_of
    from ml.ner import token_classes, tokenize

    inputs, classes, skipped = [], [], []
    annotations = scope_annotations(backend, scope).filter(was_cancelled=False)
    for row in annotations.order_by("annotation_id"):
        ctx.check()
        spans = spans_of(row.result, interface)
        text = (row.task_data or {}).get(interface.data_key)
        if not spans:
            continue
        if not isinstance(text, str):
            skipped.append({"annotation_id": row.annotation_id, "error": "The task has no text."})
            continue
        tokens = tokenize(text)
        if tokens:
            inputs.append(spec.token_batch(tokens))
            classes.append(token_classes(tokens, spans, interface.labels))
    if not inputs:
        raise ValidationFailed(
            "No usable annotations: none has a span of the backend's label config."
        )
    return np.concatenate(inputs), np.concatenate(classes), skipped


def _cell_set(ctx, backend, scope, interface, spec):
    """(cells, classes, skipped) of an object-detection project's annotations: every grid cell
    of an annotated image in the class of the rectangle over its centre (or background), and
    each rectangle's own crop in its label's class."""
    from apps.mlbackend.labelstudio.predict import detection_grid
    from apps.mlbackend.labelstudio.services import fetch_policy, task_inputs
    from apps.mlbackend.labelstudio.training import rectangles_of, scope_annotations
    from ml.detection import cell_classes, crop, grid_patches

    grid = detection_grid()
    grid_spec = spec.grid(grid)
    index = {label: i for i, label in enumerate(interface.labels)}
    patch = spec.image_shape[1:]
    policy = fetch_policy(scope)
    inputs, classes, skipped = [], [], []
    annotations = scope_annotations(backend, scope).filter(was_cancelled=False)
    for row in annotations.order_by("annotation_id"):
        ctx.check()
        rectangles = rectangles_of(row.result, interface)
        value = (row.task_data or {}).get(interface.data_key)
        if not rectangles or value is None:
            continue
        try:
            image = task_inputs(grid_spec, interface, [value], policy)[0]
        except OrchardError as exc:
            skipped.append({"annotation_id": row.annotation_id, "error": exc.message})
            continue
        inputs.append(grid_patches(image, grid))
        classes.append(cell_classes(rectangles, interface.labels, grid))
        for rectangle in rectangles:
            piece = crop(image, rectangle, patch) if rectangle[4] in index else None
            if piece is not None:
                inputs.append(piece[None])
                classes.append(np.asarray([index[rectangle[4]]], dtype=np.int64))
    if not inputs:
        raise ValidationFailed(
            "No usable annotations: none has a rectangle of the backend's label config and "
            "loadable task data." + (f" First error: {skipped[0]['error']}" if skipped else "")
        )
    return np.concatenate(inputs), np.concatenate(classes), skipped


def _training_set(ctx, backend, scope, interface, spec):
    """(inputs, labels, skipped) from the project's usable annotations."""
    from apps.mlbackend.labelstudio.services import fetch_policy, task_inputs
    from apps.mlbackend.labelstudio.training import label_of, scope_annotations

    if interface.kind == "ner":
        return _token_set(ctx, backend, scope, interface, spec)
    if interface.kind == "detection":
        return _cell_set(ctx, backend, scope, interface, spec)
    index = {label: i for i, label in enumerate(interface.labels)}
    rows = []
    annotations = scope_annotations(backend, scope).filter(was_cancelled=False)
    for row in annotations.order_by("annotation_id"):
        label = label_of(row.result, interface)
        value = (row.task_data or {}).get(interface.data_key)
        if label in index and value is not None:
            rows.append((row.annotation_id, value, index[label]))
    policy = fetch_policy(scope)
    inputs, labels, skipped = [], [], []
    for done, (annotation_id, value, label) in enumerate(rows):
        ctx.check()
        try:
            inputs.append(task_inputs(spec, interface, [value], policy)[0])
        except OrchardError as exc:
            skipped.append({"annotation_id": annotation_id, "error": exc.message})
            continue
        labels.append(label)
        ctx.progress(0.2 * (done + 1) / len(rows), stage="loading")
    if not inputs:
        raise ValidationFailed(
            "No usable annotations: none has a label of the backend's label config and "
            "loadable task data." + (f" First error: {skipped[0]['error']}" if skipped else "")
        )
    return np.stack(inputs), np.asarray(labels, dtype=np.int64), skipped


class BackendCallbacks(TrainingCallbacks):
    """A backend training's progress (loading took the first 20 %, training the next 75 %) and
    an `epoch` event per epoch; keeps the history for the task's result."""

    def __init__(self, ctx, config, *, samples: int) -> None:
        self.ctx, self.epochs = ctx, config.epochs
        batches = max(1, math.ceil(samples / config.batch_size))
        self.polls_per_epoch = max(1, batches // config.stop_check_every)
        self.epoch, self.polls = 0, 0
        self.history: list[dict[str, Any]] = []

    def should_stop(self) -> bool:
        self.polls += 1
        within = min(0.99, self.polls / self.polls_per_epoch)
        self.ctx.progress(0.2 + 0.75 * (self.epoch + within) / self.epochs)
        return self.ctx.should_stop()

    def on_epoch_end(self, result) -> None:
        self.epoch, self.polls = result.epoch, 0
        self.history.append(result.as_dict())
        self.ctx.progress(
            0.2 + 0.75 * result.epoch / self.epochs, epoch=result.epoch, loss=result.loss
        )
        self.ctx.record("epoch", result.as_dict())


def train(ctx) -> dict[str, Any]:
    from apps.clusters.training import TrainingJob, cluster_train
    from apps.mlbackend.labelstudio import runtime
    from apps.mlbackend.labelstudio.features import ModelSpec
    from apps.mlbackend.labelstudio.label_config import Interface
    from apps.mlbackend.labelstudio.training import version_record
    from apps.mlbackend.models import LabelStudioBackend, LabelStudioProject
    from ml.training import TrainConfig

    backend = (
        LabelStudioBackend.objects.select_related("cluster", "checkpoint")
        .filter(pk=ctx.params.get("backend_id"), project_id=ctx.task.project_id)
        .first()
    )
    scope = backend
    key = ctx.params.get("ls_project")
    if backend is not None and key is not None:
        scope = (
            LabelStudioProject.objects.select_related("cluster", "checkpoint")
            .filter(backend=backend, ls_project=key)
            .first()
        )
        if scope is not None:
            scope.backend = backend
    if scope is None or scope.cluster_id is None or not scope.interface:
        raise ValidationFailed("The backend was deleted, or has no model or label config.")
    cluster = scope.cluster
    interface = Interface.from_dict(scope.interface)
    spec = ModelSpec.of(cluster)
    spec.check_fits(interface.kind, interface.labels)
    from_api = _read_from_label_studio(ctx, backend, scope, interface)
    ctx.record("label_studio", from_api)
    x, y, skipped = _training_set(ctx, backend, scope, interface, spec)
    ctx.record("data", {"samples": len(x), "skipped": len(skipped)})

    try:
        config = TrainConfig.from_dict(
            training_options(backend.train_params or {}, samples=len(x), device=ctx.device)
        )
    except (TypeError, ValueError) as exc:
        raise ValidationFailed.for_field("train_params", str(exc)) from None
    model = runtime.load_weights(cluster, scope.checkpoint)
    callbacks = BackendCallbacks(ctx, config, samples=len(x))
    # The new weights become the backend's next version below (weights, checkpoint and version
    # row in one transaction), so the service does not store them itself.
    job = TrainingJob(config=config, x=x, y=y, model=model, store_weights=False)
    outcome = cluster_train(cluster=cluster, job=job, callbacks=callbacks).fit
    history = callbacks.history
    summary: dict[str, Any] = {
        "backend_id": backend.pk,
        "ls_project": key,
        "from_label_studio": from_api,
        "samples": int(len(x)),
        "skipped": skipped[:MAX_SKIPPED_REPORTED],
        "skipped_count": len(skipped),
        "epochs_completed": outcome.epochs_completed,
        "stopped": outcome.stopped,
        "history": history,
    }
    if outcome.stopped:
        return summary
    last = outcome.last
    metrics = {
        "samples": int(len(x)),
        "epochs": outcome.epochs_completed,
        "final_loss": last.loss if last else None,
        "final_accuracy": last.accuracy if last else None,
    }
    version = version_record(
        backend=backend,
        cluster=cluster,
        model=model,
        actor=ctx.task.owner,
        task=ctx.task,
        labels=list(interface.labels),
        metrics=metrics,
        scope=scope,
    )
    summary.update(metrics)
    summary["model_version"] = version.name
    summary["checkpoint_id"] = str(version.checkpoint_id)
    return summary


def register_kinds() -> None:
    from apps.clusters.services import register_cluster_kind
    from apps.mlbackend.labelstudio.services import TRAIN_KIND

    registry.register(
        TRAIN_KIND,
        train,
        time_limit_s=3600,
        max_attempts=2,
    )
    register_cluster_kind(TRAIN_KIND, validate=validate_train)
