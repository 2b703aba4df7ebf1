"""The "export" task kind: write the file, check it against the original model, record it.

Steps: load the source's network with its weights (a cluster's current weights, or a checkpoint's
file), pick the parity inputs, write the file with `ml.export`, run the format's parity check,
and only then mark the export completed (downloadable). Any failure, a failed parity check
included, ends the export failed with the reason and removes the file.

Parity inputs are real samples of the model's dataset when one is known (the dataset of the
cluster's latest task that had one, or a studio run's experiment dataset), shaped like
`input_shape` and scaled by the model's `input_scale` exactly as training fed them; otherwise
deterministic random inputs (uniform 0..1, seed 0). A file with a dynamic batch axis is checked
on `EXPORT_PARITY_SAMPLES` samples at once (a batch size it was not traced with); a fixed one on
`input_shape[0]` samples.

Settings (Django setting, else environment variable, else default): `EXPORT_PARITY_RTOL` (1e-3),
`EXPORT_PARITY_ATOL` (1e-5), `EXPORT_PARITY_SAMPLES` (16), `EXPORT_TIME_LIMIT_S` (1800).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from apps.clusters.selectors import stored_input_scale
from apps.core.conf import number_setting
from apps.core.exceptions import OrchardError, ValidationFailed
from apps.exports import services
from apps.exports.exceptions import ExportFailed
from apps.exports.formats import FORMATS, batch_is_dynamic
from apps.exports.models import Export, ExportFormat, ExportSourceKind, ExportStatus
from apps.exports.selectors import export_dir, network_of_cluster, network_sample_shape

# torch.onnx.export and torch.jit.trace keep global state: one export at a time per process.
_EXPORT_LOCK = threading.Lock()
_COMPARED = {
    ExportFormat.ONNX: "onnxruntime (CPU) vs torch eager",
    ExportFormat.TORCHSCRIPT: "torch.jit.load vs torch eager",
    ExportFormat.SAFETENSORS: "reloaded weights (bit for bit) and outputs vs the original",
}


def setting(name: str) -> float:
    """An export tunable (declared with its default in config/settings/base.py)."""
    return number_setting(name)


def validate_export(*, params: dict[str, Any]) -> None:
    """Export tasks are created by `services.export_create` only."""
    if set(params) != {"export_id"} or not isinstance(params.get("export_id"), str):
        raise ValidationFailed.for_field("params", "Export tasks are created through /api/export.")


def export_handler(ctx) -> dict[str, Any]:
    """The handler of the "export" task kind."""
    from apps.tasks.context import TaskStopped

    row = Export.objects.select_related("cluster", "checkpoint").filter(task_id=ctx.task.pk).first()
    if row is None or not services.export_mark_running(export=row):
        return {"skipped": "the export was deleted or has already ended"}
    directory = export_dir(row)
    try:
        return _run(ctx, row, directory)
    except TaskStopped:
        # The file goes first: once the row says "aborted"/"failed", nothing of it is left.
        shutil.rmtree(directory, ignore_errors=True)
        services.export_fail(export=row, error="Aborted.", status=ExportStatus.ABORTED)
        raise
    except BaseException as exc:  # the time limit too: the row must not stay "running"
        message = exc.message if isinstance(exc, OrchardError) else f"{type(exc).__name__}: {exc}"
        shutil.rmtree(directory, ignore_errors=True)
        services.export_fail(export=row, error=message)
        raise


def _run(ctx, row: Export, directory: Path) -> dict[str, Any]:
    from ml import export as mlexport

    ctx.progress(0.05, stage="loading")
    model, network, details = _load_model(row)
    ctx.check()
    if "input_shape" in row.options:
        sample_shape: list[int] | None = list(row.options["input_shape"][1:])
    else:
        sample_shape = network_sample_shape(network)
    dataset = _model_dataset(row, network)
    inputs, inputs_info, notes = _parity_inputs(row, network, sample_shape, dataset)
    ctx.check()

    ctx.progress(0.3, stage="exporting")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"model{FORMATS[row.format].extension}"
    preprocessing = preprocessing_of(network, sample_shape, dataset)
    details["preprocessing"] = preprocessing
    metadata = file_metadata_props(_file_metadata(row, network, preprocessing), preprocessing)
    options = row.options
    with _EXPORT_LOCK:
        if row.format == ExportFormat.ONNX:
            result = mlexport.export_onnx(
                model,
                input_shape=options["input_shape"],
                path=path,
                opset_version=options["opset_version"],
                dynamic_axes=options["dynamic_axes"],
                simplify=options["simplify"],
                metadata=metadata,
            )
            notes += result.notes
            details.update(exporter=result.exporter, simplified=result.simplified)
        elif row.format == ExportFormat.TORCHSCRIPT:
            mlexport.export_torchscript(
                model, input_shape=options["input_shape"], path=path, metadata=metadata
            )
        else:
            mlexport.export_safetensors(model, path, metadata)
    ctx.check()

    ctx.progress(0.7, stage="checking")
    rtol, atol = setting("EXPORT_PARITY_RTOL"), setting("EXPORT_PARITY_ATOL")
    if row.format == ExportFormat.ONNX:
        check = mlexport.check_onnx_parity(model, path, inputs, rtol=rtol, atol=atol)
    elif row.format == ExportFormat.TORCHSCRIPT:
        check = mlexport.check_torchscript_parity(model, path, inputs, rtol=rtol, atol=atol)
    else:
        check = mlexport.check_safetensors_parity(model, path, inputs, rtol=rtol, atol=atol)
    parity = {
        "passed": bool(check.ok),
        "max_abs_diff": _finite(check.max_abs_diff),
        "max_rel_diff": _finite(check.max_rel_diff),
        "rtol": rtol,
        "atol": atol,
        "compared": _COMPARED[row.format],
        **inputs_info,
    }
    ctx.record("parity", parity)
    if not check.ok:
        if not math.isfinite(check.max_abs_diff):
            reason = "the exported model's output has another shape"
        else:
            reason = f"max abs diff {check.max_abs_diff:.3g} exceeds atol {atol:g} + rtol {rtol:g}"
        message = f"Parity check failed: {reason} ({_COMPARED[row.format]})."
        shutil.rmtree(directory, ignore_errors=True)
        services.export_fail(export=row, error=message, parity=parity, notes=notes, details=details)
        raise ExportFailed(message)

    size, digest = _size_and_sha256(path)
    if not services.export_complete(
        export=row,
        file=path.name,
        size_bytes=size,
        sha256=digest,
        parity=parity,
        notes=notes,
        details=details,
    ):  # deleted while it ran
        shutil.rmtree(directory, ignore_errors=True)
        return {"export_id": row.pk, "skipped": "the export was deleted"}
    ctx.progress(1.0, stage="done")
    return {
        "export_id": row.pk,
        "format": row.format,
        "size_bytes": size,
        "sha256": digest,
        "parity": parity,
    }


def _load_model(row: Export):
    """(module in eval mode on the CPU, its network description, details to record)."""
    from apps.clusters import runtime

    details: dict[str, Any] = dict(row.details or {})
    if row.source_kind == ExportSourceKind.CLUSTER:
        if row.cluster is None:
            raise ExportFailed("The model (cluster) was deleted.")
        cluster = row.cluster
        cluster.refresh_from_db()
        network = network_of_cluster(cluster)  # its config may have gained an input_scale
        model = runtime.cluster_load_model(cluster)
        details["cluster_version"] = cluster.version
    else:
        from apps.clusters.services import checkpoint_path
        from ml.checkpoints import CheckpointError, load_compatible

        checkpoint = row.checkpoint
        if checkpoint is None:
            raise ExportFailed("The checkpoint was deleted.")
        path = checkpoint_path(str(checkpoint.project_id), str(checkpoint.pk))
        if not path.exists():
            raise ExportFailed("The checkpoint's file is missing.")
        network = dict(row.network)
        try:
            state, _meta = runtime.read_state(path)
            model = runtime.build_module(
                source=network["source"],
                template=network.get("template", ""),
                config=network["config"],
            )
            load_compatible(model, state)
        except (CheckpointError, KeyError, ValueError) as exc:
            raise ExportFailed(f"The checkpoint cannot be loaded: {exc}") from None
        details["checkpoint_id"] = str(checkpoint.pk)
    model.to("cpu").eval()
    details["input_scale"] = stored_input_scale(network=network) or 1.0
    return model, network, details


def _file_metadata(
    row: Export, network: dict[str, Any], preprocessing: dict[str, Any]
) -> dict[str, Any]:
    """What travels inside the file: enough to rebuild the network and to feed it exactly as
    training did (`preprocessing`; `input_scale` is its `scale`, from raw values)."""
    return {
        "format": "orchard.export.v2",
        "export_id": row.pk,
        "source": network.get("source"),
        "template": network.get("template", ""),
        "config": network.get("config", {}),
        "shape": network.get("shape", {}),
        "input_size": network_sample_shape(network),
        "input_scale": preprocessing["scale"],
        "class_names": list(network.get("class_names") or []),
        "preprocessing": preprocessing,
    }


def file_metadata_props(orchard: dict[str, Any], preprocessing: dict[str, Any]) -> dict[str, str]:
    """The file's str -> str metadata (ONNX `metadata_props`, TorchScript extra files, safetensors
    header): the whole description under `orchard`, and the preprocessing under plain keys a
    consumer reads without parsing Orchard's document (`scale`, `mean`, `std` as JSON)."""
    props = {
        "orchard": json.dumps(orchard, sort_keys=True),
        "preprocessing": json.dumps(preprocessing, sort_keys=True),
        "layout": preprocessing["layout"],
        "input_kind": preprocessing["input"],
        "scale": json.dumps(preprocessing["scale"]),
        "mean": json.dumps(preprocessing["mean"]),
        "std": json.dumps(preprocessing["std"]),
        "formula": preprocessing["formula"],
    }
    if preprocessing.get("color"):
        props["color"] = preprocessing["color"]
        props["resize"] = json.dumps(preprocessing["resize"])
    if orchard.get("class_names"):
        props["class_names"] = json.dumps(orchard["class_names"])
    return props


def preprocessing_of(
    network: dict[str, Any], sample_shape: list[int] | None, dataset
) -> dict[str, Any]:
    """Exactly what turns a raw sample into the model's input, as training and evaluation did.

    `input = (raw * scale - mean[c]) / std[c]`, c the channel (axis 1), float32, batch first.
    Raw is, for an image dataset, the decoded pixels (0..255, converted to `color`, resized to
    `resize` [H, W] with bilinear resampling) in `layout` NCHW; for MNIST idx data the uint8
    pixels (row-major, shaped like the input); for CSV and other tensors the stored values.
    `mean`/`std` hold one value per channel (0 and 1 when training did not normalise)."""
    from apps.datasets.models import Dataset

    scale = stored_input_scale(network=network) or 1.0
    kind = getattr(dataset, "kind", None)
    shape = list(sample_shape or [])
    info: dict[str, Any] = {"input": "values", "dtype": "float32"}
    if kind == Dataset.Kind.IMAGES and len(shape) == 3:
        scale /= 255.0
        info.update(
            input="pixels",
            color="L" if shape[0] == 1 else "RGB",
            resize=shape[1:],
            resample="bilinear",
        )
    elif kind == Dataset.Kind.MNIST and (dataset.metadata or {}).get("source_dtype") == "uint8":
        scale /= 255.0
        info["input"] = "pixels"
    channels = shape[0] if len(shape) >= 2 else 1
    normalize = network.get("normalize") or {}
    mean, std = normalize.get("mean"), normalize.get("std")
    if mean is None or std is None:
        mean, std = [0.0] * channels, [1.0] * channels
    layout = {1: "NC", 2: "NCL", 3: "NCHW", 4: "NCDHW"}.get(len(shape), "N...")
    return {
        **info,
        "layout": layout,
        "input_shape": shape,
        "scale": float(scale),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "formula": "input = (raw * scale - mean[c]) / std[c]",
    }


# --- parity inputs -------------------------------------------------------------------------------


def _parity_inputs(
    row: Export, network: dict[str, Any], sample_shape: list[int] | None, dataset
) -> tuple[np.ndarray | None, dict[str, Any], list[str]]:
    """(inputs or None, what they were, notes)."""
    if sample_shape is None:  # safetensors of a network with several inputs or outputs
        return (
            None,
            {"inputs": "none", "num_samples": 0},
            [
                "parity: the network has several inputs or outputs; its tensors were compared "
                "bit for bit, without a forward pass"
            ],
        )
    if batch_is_dynamic(row.options):
        count = int(setting("EXPORT_PARITY_SAMPLES"))
    else:
        count = int(row.options["input_shape"][0])
    notes: list[str] = []
    if dataset is not None:
        try:
            x = _dataset_samples(dataset, sample_shape, count)
        except Exception as exc:  # an unreadable dataset must not block the export
            x = None
            notes.append(f"parity: samples of dataset {dataset.name!r} unusable ({exc})")
        if x is not None:
            scale = stored_input_scale(network=network) or 1.0
            if scale != 1.0:
                x = x * np.float32(scale)
            normalize = network.get("normalize") or {}
            if normalize.get("mean") is not None and normalize.get("std") is not None:
                per_channel = (1, len(normalize["mean"])) + (1,) * (x.ndim - 2)
                mean = np.asarray(normalize["mean"], dtype=np.float32).reshape(per_channel)
                std = np.asarray(normalize["std"], dtype=np.float32).reshape(per_channel)
                x = (x - mean) / std
            return (
                np.ascontiguousarray(x, dtype=np.float32),
                {
                    "inputs": "dataset",
                    "dataset_id": str(dataset.pk),
                    "dataset_name": dataset.name,
                    "num_samples": count,
                    "input_shape": [count, *sample_shape],
                },
                notes,
            )
        if not notes:
            notes.append(
                f"parity: samples of dataset {dataset.name!r} do not fit the model's input; "
                "random inputs used"
            )
    x = np.random.default_rng(0).random((count, *sample_shape), dtype=np.float32)
    return (
        x,
        {"inputs": "random", "num_samples": count, "input_shape": [count, *sample_shape]},
        notes,
    )


def _model_dataset(row: Export, network: dict[str, Any]):
    """The dataset the model was trained or run on, when known and ready."""
    from apps.clusters.models import Cluster
    from apps.datasets.models import Dataset, TaskDataset

    hinted = (row.details or {}).get("hints", {}).get("dataset_id")
    if hinted:
        dataset = Dataset.objects.filter(
            pk=hinted, project_id=row.project_id, status=Dataset.Status.READY
        ).first()
        if dataset is not None:
            return dataset
    cluster_id = row.cluster_id or network.get("cluster_id")
    if not cluster_id:
        return None
    # The dataset of the cluster's latest task that read one (train, request).
    link = (
        TaskDataset.objects.filter(
            task__target_type=Cluster._meta.label_lower,
            task__target_id=cluster_id,
            task__project_id=row.project_id,
            dataset__isnull=False,
            dataset__status=Dataset.Status.READY,
        )
        .select_related("dataset")
        .order_by("-task__created_at")
        .first()
    )
    return link.dataset if link is not None else None


def _dataset_samples(dataset, sample_shape: list[int], count: int) -> np.ndarray | None:
    """`count` samples spread evenly over the dataset, shaped `(count, *sample_shape)`, or None
    when the dataset's samples do not hold the model's number of input values."""
    from apps.datasets.models import Dataset
    from apps.datasets.selectors import dataset_arrays

    size = None
    if dataset.kind == Dataset.Kind.IMAGES and len(sample_shape) == 3:
        size = (int(sample_shape[1]), int(sample_shape[2]))
    x, _labels = dataset_arrays(dataset, size=size)
    if len(x) == 0 or math.prod(x.shape[1:]) != math.prod(sample_shape):
        return None
    rows = np.linspace(0, len(x) - 1, count).round().astype(np.int64)
    return np.asarray(x[rows], dtype=np.float32).reshape(count, *sample_shape)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return path.stat().st_size, digest.hexdigest()


def register_export_kind() -> None:
    from apps.tasks import registry

    registry.register(
        "export",
        export_handler,
        time_limit_s=int(setting("EXPORT_TIME_LIMIT_S")),
        max_attempts=2,
        validate=validate_export,
    )
