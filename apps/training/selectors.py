"""Reads of the training studio: experiments, runs, their checkpoints and metrics, evaluations.

Other apps (exports) use `run_get` and `run_checkpoint_get`; their signatures are stable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from django.db.models import Count, OuterRef, QuerySet, Subquery

from apps.core.exceptions import NotFound, ValidationFailed
from apps.core.tenancy import ProjectAccess
from apps.training.models import Evaluation, Experiment, Run

if TYPE_CHECKING:
    from apps.clusters.models import Checkpoint

CHECKPOINT_NAMES = ("best", "last")


# --- experiments ---------------------------------------------------------------------------------


def experiment_list(*, access: ProjectAccess) -> QuerySet[Experiment]:
    """The experiments the caller sees, newest first, with their number of runs."""
    return (
        Experiment.objects.visible_to(access)
        .select_related("owner", "split")
        .annotate(
            runs_count=Count("runs"),
            latest_task_state=Subquery(
                Run.objects.filter(experiment=OuterRef("pk"))
                .order_by("-created_at")
                .values("task__state")[:1]
            ),
        )
        .order_by("-created_at", "pk")
    )


def experiment_get(*, access: ProjectAccess, exp_id: str) -> Experiment:
    """One experiment the caller sees, or NotFound (missing and foreign alike)."""
    return Experiment.objects.select_related("split").get_visible(access, pk=str(exp_id))


# --- runs ----------------------------------------------------------------------------------------


def run_list(*, access: ProjectAccess, experiment: Experiment | None = None) -> QuerySet[Run]:
    """The runs the caller sees, newest first (optionally of one experiment)."""
    qs = (
        Run.objects.visible_to(access).select_related("task", "owner").order_by("-created_at", "pk")
    )
    if experiment is not None:
        qs = qs.filter(experiment=experiment)
    return qs


def run_get(*, access: ProjectAccess, run_id: str, experiment_id: str | None = None) -> Run:
    """One run the caller sees, or NotFound; with `experiment_id`, it must be of that experiment.

    Stable: used by apps.exports.
    """
    run = Run.objects.select_related("task", "experiment", "cluster").get_visible(
        access, pk=str(run_id)
    )
    if experiment_id is not None and run.experiment_id != str(experiment_id):
        raise NotFound("Run not found.")
    return run


def run_checkpoint_get(*, run: Run, which: str) -> Checkpoint:
    """The run's `best` or `last` checkpoint (an apps.clusters Checkpoint), or NotFound when the
    run has none yet (no epoch completed) or it was deleted. Stable: used by apps.exports.

    Its `metadata` carries what rebuilds the model (`source`, `template`, `config` with
    `input_shape`/`num_classes`/`seed`, `shape`) and, for the studio, `run_id`, `epoch`, `which`,
    `input_size` (the per-sample shape the network takes), `input_scale`, `class_names`.
    """
    from apps.clusters.models import Checkpoint

    if which not in CHECKPOINT_NAMES:
        raise ValidationFailed.for_field("checkpoint", "must be 'best' or 'last'.")
    checkpoint_id = run.best_checkpoint_id if which == "best" else run.last_checkpoint_id
    checkpoint = (
        Checkpoint.objects.filter(pk=checkpoint_id, project_id=run.project_id).first()
        if checkpoint_id
        else None
    )
    if checkpoint is None:
        raise NotFound(f"The run has no '{which}' checkpoint yet.")
    return checkpoint


def run_metrics(*, run: Run) -> dict[str, Any]:
    """The run's per-epoch metrics (from its stored `epoch_end` events) and its best epoch.

    An epoch recorded twice (a worker lost between recording and checkpointing) keeps the later.
    """
    from apps.tasks.models import TaskEvent

    epochs: dict[int, dict[str, Any]] = {}
    if run.task_id is not None:
        rows = TaskEvent.objects.filter(task_id=run.task_id, kind="epoch_end").order_by("seq")
        for data in rows.values_list("data", flat=True):
            if isinstance(data, dict) and isinstance(data.get("epoch"), int):
                epochs[data["epoch"]] = _plan_epoch(data)
    return {
        # The plan's metrics.json: {"epochs": [{epoch, train_loss, val_loss, ...}]}.
        "epochs": [epochs[k] for k in sorted(epochs)],
        "run_id": run.pk,
        "status": run.status,
        "max_epochs": int(run.config.get("epochs", 0) or 0),
        "epochs_completed": run.epochs_completed,
        "best_epoch": run.best_epoch,
        "best_metric": {run.best_metric: run.best_value} if run.best_metric else None,
        # Orchard's earlier names (loss, accuracy, learning_rate, seconds), for the admin.
        "history": [_legacy_epoch(epochs[k]) for k in sorted(epochs)],
    }


def _legacy_epoch(epoch: dict[str, Any]) -> dict[str, Any]:
    names = {v: k for k, v in _LEGACY_METRICS.items()}
    return {names.get(k, k): v for k, v in epoch.items()}


_LEGACY_METRICS = {
    "loss": "train_loss",
    "accuracy": "train_accuracy",
    "learning_rate": "lr",
    "seconds": "duration_s",
}


def _plan_epoch(data: dict[str, Any]) -> dict[str, Any]:
    """One stored epoch_end event as a metrics.json epoch (events of older runs were flat)."""
    if isinstance(data.get("metrics"), dict):
        return {"epoch": data["epoch"], **data["metrics"]}
    out = {"epoch": data["epoch"]}
    for key, value in data.items():
        if key in ("val_loss", "val_accuracy") and value is not None:
            out[key] = value
        elif key in _LEGACY_METRICS and value is not None:
            out[_LEGACY_METRICS[key]] = value
    return out


# --- evaluations ---------------------------------------------------------------------------------


def evaluation_list(*, access: ProjectAccess) -> QuerySet[Evaluation]:
    return (
        Evaluation.objects.visible_to(access)
        .select_related("task", "owner")
        .order_by("-created_at", "pk")
    )


def evaluation_get(*, access: ProjectAccess, eval_id: str) -> Evaluation:
    return Evaluation.objects.select_related("task").get_visible(access, pk=str(eval_id))


# --- per-item evaluation results ---------------------------------------------------------------

ITEM_SORTS = ("filename", "confidence", "error")
_ITEM_ARRAYS = ("indices", "names", "true", "pred", "confidence", "error", "probs")


class EvaluationItems:
    """A read-only sequence of an evaluation's per-item rows in the requested order, built from
    its memory-mapped NumPy arrays (slicing materialises only the requested page)."""

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        order: np.ndarray,
        labels: list[str],
        dataset_id=None,
    ):
        self.arrays = arrays
        self.order = order
        self.labels = labels
        self.dataset_id = dataset_id

    def __len__(self) -> int:
        return int(len(self.order))

    def count(self) -> int:
        return len(self)

    def __getitem__(self, key):
        if not isinstance(key, slice):
            raise TypeError("EvaluationItems supports slices only")
        rows = self.order[key]
        a = self.arrays
        paths = [str(a["names"][i]) for i in rows.tolist()]
        plan_names = {p: p for p in paths}
        if self.dataset_id is not None and any("/" in p for p in paths):
            from apps.datasets.api.serializers import plan_filenames

            plan_names = plan_filenames(self.dataset_id, paths)
        out = []
        for i in rows.tolist():
            true, pred = int(a["true"][i]), int(a["pred"][i])
            confidence = float(a["confidence"][i])
            probs = np.asarray(a["probs"][i], dtype=np.float64)
            out.append(
                {
                    # The plan's per-image result (plan/07-evaluation/01), then Orchard's extras.
                    "filename": plan_names[str(a["names"][i])],
                    "ground_truth": {"class_id": true, "class_name": self._label(true)},
                    "prediction": {
                        "class_id": pred,
                        "class_name": self._label(pred),
                        "confidence": confidence,
                    },
                    "correct": true == pred,
                    "probabilities": {
                        self._label(k): float(p) for k, p in enumerate(probs.tolist())
                    },
                    "index": int(a["indices"][i]),
                    "path": str(a["names"][i]),
                    "true_class": true,
                    "true_label": self._label(true),
                    "predicted_class": pred,
                    "predicted_label": self._label(pred),
                    "confidence": confidence,
                    "error": float(a["error"][i]),
                }
            )
        return out

    def _label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else str(index)


def evaluation_items(
    *,
    evaluation: Evaluation,
    sort_by: str = "filename",
    sort_order: str = "asc",
    filter_correct: bool | None = None,
    filter_class: str | None = None,
) -> EvaluationItems:
    """The per-item results of a finished evaluation, filtered and sorted (ties by filename)."""
    from apps.core.exceptions import Conflict
    from apps.training.services import evaluation_dir

    if sort_by not in ITEM_SORTS:
        raise ValidationFailed.for_field("sort_by", f"must be one of {', '.join(ITEM_SORTS)}.")
    if sort_order not in ("asc", "desc"):
        raise ValidationFailed.for_field("sort_order", "must be asc or desc.")
    results = evaluation.results or {}
    labels = [str(c) for c in results.get("classes") or []] or [
        str(c["name"]) for c in results.get("per_class", []) if isinstance(c, dict) and "name" in c
    ]
    directory = evaluation_dir(evaluation)
    paths = {name: directory / f"{name}.npy" for name in _ITEM_ARRAYS}
    if evaluation.status != "completed" or not all(p.exists() for p in paths.values()):
        raise Conflict(f"The evaluation has no results yet (it is {evaluation.status}).")
    arrays = {name: np.load(p, mmap_mode="r", allow_pickle=False) for name, p in paths.items()}
    keep = np.ones(len(arrays["true"]), dtype=bool)
    if filter_correct is not None:
        correct = np.asarray(arrays["true"]) == np.asarray(arrays["pred"])
        keep &= correct if filter_correct else ~correct
    if filter_class not in (None, ""):
        if filter_class not in labels:
            raise ValidationFailed.for_field(
                "filter_class", f"unknown class (known: {', '.join(labels)})."
            )
        keep &= np.asarray(arrays["true"]) == labels.index(filter_class)
    rows = np.flatnonzero(keep)
    names = np.asarray(arrays["names"])[rows]
    if sort_by == "filename":
        order = rows[np.argsort(names, kind="stable")]
        if sort_order == "desc":
            order = order[::-1]
    else:
        values = np.asarray(arrays[sort_by])[rows].astype(np.float64)
        key = -values if sort_order == "desc" else values
        order = rows[np.lexsort((names, key))]
    return EvaluationItems(arrays, order, labels, evaluation.dataset_id)
