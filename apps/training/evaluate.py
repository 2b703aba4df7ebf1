"""The `studio_evaluate` task kind: an evaluation of a checkpoint on a dataset (predictions,
metrics, confusion matrix), and the plan results of its report."""

from __future__ import annotations

from typing import Any

import numpy as np

from apps.core.exceptions import ValidationFailed
from apps.training.models import Evaluation
from apps.training.reporting import _retrying

EVAL_CHUNK = 8192


def _save_npy(path, array) -> None:
    """One NumPy array (no pickle), written atomically."""
    import io

    from apps.clusters.runtime import atomic_write

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    atomic_write(path, buffer.getvalue())


def studio_evaluate(ctx) -> dict[str, Any]:
    """Measure a run's checkpoint on a dataset subset; per-item arrays go to .npy files."""
    import torch

    from apps.clusters.runtime import build_module, read_state
    from apps.clusters.selectors import stored_input_scale
    from apps.clusters.services import checkpoint_path
    from apps.training import data
    from apps.training.services import evaluation_dir
    from ml.inference import predict_logits
    from ml.metrics import classification_report

    evaluation = Evaluation.objects.select_related("checkpoint", "dataset", "split").get(
        task_id=ctx.task.pk
    )
    checkpoint = evaluation.checkpoint
    if checkpoint is None:
        raise ValidationFailed.for_field("checkpoint", "the checkpoint was deleted.")
    dataset = evaluation.dataset
    if dataset is None:
        raise ValidationFailed.for_field("dataset_id", "the dataset was deleted.")
    if evaluation.split_index is not None and evaluation.split is None:
        raise ValidationFailed.for_field("split_index", "the split was deleted.")
    path = checkpoint_path(str(checkpoint.project_id), str(checkpoint.pk))
    if not path.exists():
        raise ValidationFailed.for_field("checkpoint", "the checkpoint's file is missing.")
    state, meta = read_state(path)
    model = build_module(
        source=meta["source"], template=meta.get("template", ""), config=meta["config"]
    )
    model.load_state_dict(state)
    input_size = list(meta.get("input_size") or data.default_input_size(dataset))
    scale = stored_input_scale(checkpoint_metadata=meta) or 1.0
    class_names = list(meta.get("class_names") or dataset.class_names)
    num_classes = len(class_names)

    indices = data.subset_indices(dataset, evaluation.split, evaluation.split_subset)
    subset = data.load_subset(dataset, input_size=input_size, indices=indices, scale=scale)
    normalize = meta.get("normalize") or {}
    data.normalize(subset.x, normalize.get("mean"), normalize.get("std"))
    _retrying(
        lambda: Evaluation.objects.filter(pk=evaluation.pk).update(num_samples=len(indices))
    )  # the total of the plan's progress {processed, total}
    ctx.record("status", {"status": "running", "num_samples": len(indices)})
    chunks = []
    n = len(subset.x)
    for start in range(0, n, EVAL_CHUNK):
        ctx.check()
        chunks.append(
            predict_logits(
                model,
                subset.x[start : start + EVAL_CHUNK],
                batch_size=evaluation.batch_size,
                device="cpu" if ctx.device == "cpu" else ctx.device.replace("gpu", "cuda"),
            )
        )
        ctx.progress(min(1.0, (start + EVAL_CHUNK) / max(1, n)))
    logits = torch.cat(chunks) if chunks else torch.zeros((0, num_classes))
    probs = torch.softmax(logits.float(), dim=1).numpy().astype(np.float32)
    true = subset.y
    pred = probs.argmax(axis=1).astype(np.int64) if n else np.zeros(0, np.int64)
    confidence = probs.max(axis=1) if n else np.zeros(0, np.float32)
    error = (1.0 - probs[np.arange(n), true]).astype(np.float32) if n else np.zeros(0, np.float32)
    loss = float(-np.log(np.clip(probs[np.arange(n), true], 1e-12, 1.0)).mean()) if n else 0.0
    report = plan_results(classification_report(pred, true, num_classes, class_names))
    report.update(
        loss=loss,
        checkpoint=evaluation.checkpoint_name,
        checkpoint_id=str(checkpoint.pk),
        checkpoint_epoch=meta.get("epoch"),
        split_subset=evaluation.split_subset,
    )
    directory = evaluation_dir(evaluation)
    _save_npy(directory / "indices.npy", indices.astype(np.int64))
    _save_npy(directory / "names.npy", data.item_names(dataset, indices))
    _save_npy(directory / "true.npy", true.astype(np.int64))
    _save_npy(directory / "pred.npy", pred)
    _save_npy(directory / "confidence.npy", confidence.astype(np.float32))
    _save_npy(directory / "error.npy", error)
    _save_npy(directory / "probs.npy", probs)
    _retrying(
        lambda: Evaluation.objects.filter(pk=evaluation.pk).update(num_samples=n, results=report)
    )
    ctx.record("complete", {"status": "completed", "accuracy": report["accuracy"]})
    return {"evaluation_id": evaluation.pk, "accuracy": report["accuracy"], "num_samples": n}


def plan_results(report: dict[str, Any]) -> dict[str, Any]:
    """The plan's aggregate classification metrics (plan/07-evaluation/02): accuracy, the macro
    averages, the confusion matrix and `per_class` keyed by class name; Orchard's extras
    (`classes` in order, `macro_avg`, `weighted_avg`, `num_samples`) follow."""
    per_class = report["per_class"]
    macro = report["macro_avg"]
    return {
        "accuracy": report["accuracy"],
        "f1_macro": macro["f1"],
        "precision_macro": macro["precision"],
        "recall_macro": macro["recall"],
        "confusion_matrix": report["confusion_matrix"],
        "per_class": {
            c["name"]: {k: c[k] for k in ("precision", "recall", "f1", "support")}
            for c in per_class
        },
        "classes": [c["name"] for c in per_class],
        "num_samples": report["num_samples"],
        "macro_avg": macro,
        "weighted_avg": report["weighted_avg"],
    }
