"""The built-in compute: task kinds `learnuplet` and `preduplet` of the job engine.

A job claims its `todo` uplet with the same conditional claim as `POST /worker/...` (so it races
HTTP compute workers fairly: one of them wins), trains with the clusters' training service or
predicts with `ml/`, and reports through the same services as `POST /learndone` /
`POST /preddone`. Registered in `MarketplaceConfig.ready()`.

- learnuplet: start from `model_start` (the algo's cluster weights at rank 0, else the Checkpoint
  of that id), train on the concatenated `train_data` datasets, measure accuracy per train and
  test data (`train_perf`, `test_perf`, maps {data uuid: accuracy}) and on all of the problem's
  test data together (`perf`: accuracy over every test sample, so every rank and algo of a problem
  is measured on the same data), and save the model as the Checkpoint whose id is `model_end`.
  The task's result (and its "perf" event) also names the model it started from and the sample
  count behind each figure.
- preduplet: load the Checkpoint `model`, predict every data's samples, and store the classes
  (and logits) as a request result whose id is the `prediction_storage_uuid`
  (`/api/projects/{id}/results/{prediction_storage_uuid}`).

Training options: `MARKETPLACE_TRAIN` (a Django setting, a dict of `ml.training.TrainConfig`
fields) over `TRAIN_DEFAULTS`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from apps.clusters.selectors import task_cluster
from apps.clusters.training import TrainingCallbacks, scaled_rows, training_inputs
from apps.core.conf import setting
from apps.core.exceptions import Conflict, OrchardError, ValidationFailed
from apps.marketplace import dispatch, selectors, services
from apps.marketplace.models import Learnuplet, Preduplet, UpletStatus
from apps.tasks import registry
from apps.tasks.context import TaskStopped

logger = logging.getLogger(__name__)

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 32,
    "learning_rate": 2e-3,
    "optimizer": "adam",
    "seed": 0,
}


# --- shared ----------------------------------------------------------------------------------


def _take(ctx, uplet) -> bool:
    """Claim the uplet for this job; True when it is ours (also when this job already claimed it
    before its worker was lost and the engine re-queued it)."""
    if (
        uplet.status == UpletStatus.PENDING
        and uplet.task_id == ctx.task.pk
        and uplet.claimed_by_id is None
    ):
        return True
    try:
        services.uplet_claim(uplet=uplet, worker=str(ctx.task.pk), account=None)
    except Conflict as exc:
        logger.info("%s: %s", ctx.task.pk, exc.message)
        return False
    return True


def _fail(uplet, reason: str) -> None:
    report = (
        services.learnuplet_report if isinstance(uplet, Learnuplet) else services.preduplet_report
    )
    try:
        report(uplet=uplet, account=None, status=UpletStatus.FAILED, reason=reason)
    except OrchardError as exc:  # no longer ours or no longer pending: nothing to undo
        logger.warning("could not mark %s failed (%s): %s", uplet, reason, exc.message)


def _run(ctx, uplet, work) -> dict[str, Any]:
    if not _take(ctx, uplet):
        return {"skipped": f"{uplet} was taken by another worker"}
    try:
        return work(ctx, uplet)
    except TaskStopped:
        _fail(uplet, "stopped")
        raise
    except Exception as exc:
        _fail(uplet, str(exc))
        raise


def _datasets(uplet, uuids) -> dict:
    datasets = selectors.datasets_for(project_id=uplet.project_id, uuids=uuids)
    if datasets is None:
        raise ValidationFailed.for_field("data", "some data are not ready Orchard datasets.")
    return datasets


def _labelled(dataset) -> tuple[Any, np.ndarray]:
    """A datum's inputs as `dataset_arrays` gives them (memory-mapped float32, or the stored
    uint8 pixels as `Float32Inputs`) and its class indices."""
    from apps.datasets.selectors import dataset_arrays

    x, y = dataset_arrays(dataset)
    if y is None:
        raise ValidationFailed.for_field("data", f"dataset {dataset.name!r} has no labels.")
    y = np.asarray(y)
    if y.ndim == 2:  # one-hot
        y = y.argmax(axis=1)
    return x, y.astype(np.int64)


def _joined(inputs: list[Any]) -> Any:
    """The training data of a learnuplet as one set of rows: one file as it is loaded (no
    copy); several files of stored uint8 pixels still as stored pixels (a quarter of the bytes
    of float32); other mixes as float32 rows."""
    from apps.datasets.selectors import Float32Inputs

    if len(inputs) == 1:
        return inputs[0]
    stored = {x.stored.dtype for x in inputs if isinstance(x, Float32Inputs)}
    if len(stored) == 1 and all(isinstance(x, Float32Inputs) for x in inputs):
        return Float32Inputs(np.concatenate([x.stored.reshape(len(x), -1) for x in inputs]))
    return np.concatenate([np.asarray(x, dtype=np.float32).reshape(len(x), -1) for x in inputs])


def _load_model(uplet, cluster, model_id) -> tuple[Any, float | None]:
    """(module, input scale) for a model id: the algo itself (its cluster's current weights) or a
    Checkpoint of the project."""
    from apps.clusters import runtime
    from apps.clusters.models import Checkpoint
    from apps.clusters.selectors import stored_input_scale
    from apps.clusters.services import checkpoint_path
    from ml.checkpoints import CheckpointMismatch, load_compatible

    algo = getattr(uplet, "algo", None)
    if algo is not None and model_id == algo.uuid:
        return runtime.cluster_load_model(cluster), stored_input_scale(cluster=cluster)
    checkpoint = Checkpoint.objects.filter(project_id=uplet.project_id, pk=model_id).first()
    path = checkpoint_path(str(uplet.project_id), str(model_id)) if checkpoint else None
    if path is None or not path.exists():
        raise ValidationFailed.for_field("model", f"model {model_id} is not stored in Orchard.")
    state, meta = runtime.read_state(path)
    model = runtime.cluster_build_model(cluster)
    try:
        load_compatible(model, state)
    except CheckpointMismatch as exc:
        raise ValidationFailed.for_field("model", f"model {model_id} does not fit: {exc}") from None
    model.eval()
    return model, stored_input_scale(checkpoint_metadata=meta)


# --- learnuplet ------------------------------------------------------------------------------


def _train_config(device: str):
    from ml.training import TrainConfig

    options = {**TRAIN_DEFAULTS, **(setting("MARKETPLACE_TRAIN") or {})}
    options["device"] = device
    try:
        return TrainConfig.from_dict(options)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed.for_field("MARKETPLACE_TRAIN", str(exc)) from None


class LearnCallbacks(TrainingCallbacks):
    """A learnuplet's progress: the task's progress and an `epoch` event per epoch."""

    def __init__(self, ctx, epochs: int) -> None:
        self.ctx, self.epochs = ctx, epochs

    def on_epoch_end(self, result) -> None:
        self.ctx.progress(result.epoch / self.epochs, epoch=result.epoch, loss=result.loss)
        self.ctx.record("epoch", result.as_dict())

    def should_stop(self) -> bool:
        return self.ctx.should_stop()


def _learn(ctx, uplet: Learnuplet) -> dict[str, Any]:
    from apps.clusters.training import TrainingJob, cluster_train
    from ml.data import input_scale
    from ml.training import evaluate

    cluster = task_cluster(ctx.task)
    datasets = _datasets(uplet, [*uplet.train_data, *uplet.test_data])
    model, scale = _load_model(uplet, cluster, uplet.model_start)
    train = {u: _labelled(datasets[u]) for u in uplet.train_data}
    x_raw = _joined([x for x, _ in train.values()])
    y = np.concatenate([y for _, y in train.values()])
    scale = float(scale or input_scale(x_raw))
    config = _train_config(ctx.device)
    ctx.progress(0.0, rank=uplet.rank)
    # The model of a rank is its Checkpoint `model_end` (kept below), not the algo's cluster:
    # its weights and config stay as they are.
    job = TrainingJob(
        config=config, x=training_inputs(x_raw, scale), y=y, model=model, store_weights=False
    )
    fitted = cluster_train(
        cluster=cluster, job=job, callbacks=LearnCallbacks(ctx, config.epochs)
    ).fit
    if fitted.stopped:
        raise TaskStopped()
    model.eval()

    def accuracy(x, labels) -> float:
        return float(evaluate(model, training_inputs(x, scale), labels)[1])

    train_perf = {u: accuracy(x, labels) for u, (x, labels) in train.items()}
    # `perf` is the accuracy over every sample of the problem's test data together (the same
    # data for every rank and algo of the problem, so perfs compare); per file in `test_perf`.
    test_perf, hits, total, test_samples = {}, 0.0, 0, {}
    for u in uplet.test_data:
        x, labels = _labelled(datasets[u])
        test_perf[u] = accuracy(x, labels)
        test_samples[u] = len(labels)
        hits += test_perf[u] * len(labels)
        total += len(labels)
    if not total:
        raise ValidationFailed.for_field("test_data", "the problem's test data hold no samples.")
    perf = hits / total
    _save_model(uplet, cluster, model, scale, perf)
    figures = {
        "perf": perf,
        "metric": "accuracy",
        "train_perf": train_perf,
        "test_perf": test_perf,
        "train_samples": {u: len(labels) for u, (_, labels) in train.items()},
        "test_samples": test_samples,
        "model_start": str(uplet.model_start),
    }
    ctx.record("perf", figures)
    services.learnuplet_report(
        uplet=uplet,
        account=None,
        status=UpletStatus.DONE,
        perf=perf,
        train_perf=train_perf,
        test_perf=test_perf,
    )
    return {
        "learnuplet": str(uplet.uuid),
        "rank": uplet.rank,
        **figures,
        "model_end": str(uplet.model_end),
        "epochs_completed": fitted.epochs_completed,
        "input_scale": scale,
    }


def _save_model(uplet: Learnuplet, cluster, model, scale: float, perf: float) -> None:
    """Save the trained model as the Checkpoint whose id is the learnuplet's `model_end`."""
    from apps.clusters import runtime
    from apps.clusters.training import checkpoint_payload, checkpoint_store

    meta = {
        **runtime.cluster_metadata(cluster),
        "input_scale": scale,
        "marketplace": {
            "learnuplet": str(uplet.uuid),
            "algo": str(uplet.algo.uuid),
            "rank": uplet.rank,
            "perf": perf,
        },
    }
    checkpoint_store(
        checkpoint_id=uplet.model_end,
        project_id=uplet.project_id,
        owner_id=uplet.owner_id,
        name=f"{uplet.algo.name} rank {uplet.rank}"[:200],
        cluster=cluster,
        payload=checkpoint_payload(model.state_dict(), meta),
        metadata=meta,
    )


def learnuplet(ctx) -> dict[str, Any]:
    uplet = Learnuplet.objects.select_related("algo", "problem").get(pk=ctx.params["uplet_id"])
    return _run(ctx, uplet, _learn)


# --- preduplet -------------------------------------------------------------------------------


def _predict(ctx, uplet: Preduplet) -> dict[str, Any]:
    from apps.clusters.services import request_result_store
    from apps.datasets.selectors import dataset_arrays
    from ml.inference import predict_logits
    from ml.training import resolve_device

    device = resolve_device(ctx.device)
    data = uplet.data_uuids
    datasets = _datasets(uplet, data)
    model, scale = _load_model(uplet, task_cluster(ctx.task), uplet.model)
    scale = float(scale or 1.0)
    logits, parts, offset = [], [], 0
    for i, u in enumerate(data):
        ctx.check()
        x, _ = dataset_arrays(datasets[u])
        out = predict_logits(model, scaled_rows(x, scale), device=device).numpy()
        logits.append(out.astype(np.float32))
        parts.append({"data": u, "offset": offset, "count": len(out)})
        offset += len(out)
        ctx.progress((i + 1) / len(data))
    logits_all = np.concatenate(logits)
    classes = logits_all.argmax(axis=1).astype(np.int64)
    result = request_result_store(
        task=ctx.task,
        classes=classes,
        logits=logits_all,
        summary={"model": str(uplet.model), "preduplet": str(uplet.uuid), "data": parts},
    )
    services.preduplet_report(
        uplet=uplet, account=None, status=UpletStatus.DONE, prediction_storage_uuid=str(result.pk)
    )
    return {"preduplet": str(uplet.uuid), "prediction_storage_uuid": str(result.pk), "data": parts}


def preduplet(ctx) -> dict[str, Any]:
    uplet = Preduplet.objects.select_related("problem").get(pk=ctx.params["uplet_id"])
    return _run(ctx, uplet, _predict)


# --- registration ----------------------------------------------------------------------------


def _validate(*, params: dict[str, Any]) -> None:
    uplet_id = params.get("uplet_id")
    if isinstance(uplet_id, bool) or not isinstance(uplet_id, int) or set(params) != {"uplet_id"}:
        raise ValidationFailed.for_field(
            "params", "must be {uplet_id: <int>} (set by the marketplace)."
        )


def register_kinds() -> None:
    registry.register(
        dispatch.LEARNUPLET_KIND,
        learnuplet,
        time_limit_s=3600,
        max_attempts=2,
        validate=_validate,
    )
    registry.register(
        dispatch.PREDUPLET_KIND,
        preduplet,
        time_limit_s=3600,
        max_attempts=2,
        validate=_validate,
    )
