"""The `labelstudio_train` task kind: fit the backend's model on its stored annotations.

Runs on the job engine like every task (queued on the model's host, one run of a model at a
time). It reads the annotations whose label belongs to the backend's label config, turns their
task data into inputs (texts featurized, images fetched under the backend's fetch policy; a task
whose data cannot be fetched is skipped and reported), fits the model from its current weights
with `ml.training.fit`, and records the result as the backend's next version (new weights, a
checkpoint, `model_version` bumped). A stopped run records nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from apps.core.exceptions import OrchardError, ValidationFailed
from apps.tasks import registry

MAX_SKIPPED_REPORTED = 20


def validate_train(*, params: dict[str, Any], cluster, dataset) -> None:
    from apps.mlbackend.models import LabelStudioBackend

    unknown = sorted(set(params) - {"backend_id"})
    if unknown:
        raise ValidationFailed.for_field("params", f"Unknown option(s): {', '.join(unknown)}.")
    backend_id = params.get("backend_id")
    if (
        cluster is None
        or not isinstance(backend_id, str)
        or not LabelStudioBackend.objects.filter(pk=backend_id, cluster=cluster).exists()
    ):
        raise ValidationFailed.for_field(
            "params", "backend_id must name a Label Studio backend bound to this cluster."
        )


def _training_set(ctx, backend, interface, spec):
    """(inputs, labels, skipped) from the backend's usable annotations."""
    from apps.mlbackend.labelstudio.services import fetch_policy, label_of, task_inputs

    index = {label: i for i, label in enumerate(interface.labels)}
    rows = []
    for row in backend.annotations.filter(was_cancelled=False).order_by("annotation_id"):
        label = label_of(row.result, interface)
        value = (row.task_data or {}).get(interface.data_key)
        if label in index and value is not None:
            rows.append((row.annotation_id, value, index[label]))
    policy = fetch_policy(backend)
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


def train(ctx) -> dict[str, Any]:
    from apps.mlbackend.labelstudio import runtime
    from apps.mlbackend.labelstudio.features import ModelSpec
    from apps.mlbackend.labelstudio.label_config import Interface
    from apps.mlbackend.labelstudio.services import TRAIN_DEFAULTS, version_record
    from apps.mlbackend.models import LabelStudioBackend
    from ml.training import TrainConfig, fit

    backend = (
        LabelStudioBackend.objects.select_related("cluster", "checkpoint")
        .filter(pk=ctx.params.get("backend_id"), project_id=ctx.task.project_id)
        .first()
    )
    if backend is None or backend.cluster_id is None or not backend.interface:
        raise ValidationFailed("The backend was deleted, or has no model or label config.")
    cluster = backend.cluster
    interface = Interface.from_dict(backend.interface)
    spec = ModelSpec.of(cluster)
    spec.check_fits(interface.kind, interface.labels)
    x, y, skipped = _training_set(ctx, backend, interface, spec)
    ctx.record("data", {"samples": len(x), "skipped": len(skipped)})

    try:
        config = TrainConfig.from_dict(
            {**TRAIN_DEFAULTS, **(backend.train_params or {}), "device": ctx.device}
        )
    except (TypeError, ValueError) as exc:
        raise ValidationFailed.for_field("train_params", str(exc)) from None
    model = runtime.load_weights(cluster, backend.checkpoint)
    batches = max(1, math.ceil(len(x) / config.batch_size))
    polls_per_epoch = max(1, batches // config.stop_check_every)
    state = {"epoch": 0, "polls": 0}
    history: list[dict[str, Any]] = []

    def should_stop() -> bool:
        state["polls"] += 1
        within = min(0.99, state["polls"] / polls_per_epoch)
        ctx.progress(0.2 + 0.75 * (state["epoch"] + within) / config.epochs)
        return ctx.should_stop()

    def on_epoch_end(result) -> None:
        state["epoch"], state["polls"] = result.epoch, 0
        history.append(result.as_dict())
        ctx.progress(
            0.2 + 0.75 * result.epoch / config.epochs, epoch=result.epoch, loss=result.loss
        )
        ctx.record("epoch", result.as_dict())

    outcome = fit(model, x, y, config, should_stop=should_stop, on_epoch_end=on_epoch_end)
    summary: dict[str, Any] = {
        "backend_id": backend.pk,
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
    )
    summary.update(metrics)
    summary["model_version"] = version.name
    summary["checkpoint_id"] = str(version.checkpoint_id)
    return summary


def register_kinds() -> None:
    from apps.mlbackend.labelstudio.services import TRAIN_KIND

    registry.register(
        TRAIN_KIND,
        train,
        time_limit_s=3600,
        max_attempts=2,
        needs_cluster=True,
        needs_dataset=False,
        validate=validate_train,
    )
