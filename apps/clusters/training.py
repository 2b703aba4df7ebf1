"""Training a cluster's model: the one path of every trainer (the studio's runs, the
marketplace's learnuplets, Label Studio backends, Hanami's `train` kind).

A caller brings what only it knows as a `TrainingJob`: its data (read from its own sources and
scaled by the factor it records: `training_scale` answers the cluster's stored one, else the one
the data need), hyper-parameters, where its model starts and what to resume from; and its
reporting as `TrainingCallbacks` (the hooks of `ml.training.fit`, plus `on_start` and
`may_store`). `cluster_train` then

1. records the input scale in the cluster's config, once and before the first epoch, so every
   checkpoint of the run carries it (`cluster_config_update`);
2. loads the cluster's current weights, builds initial ones, or takes the caller's model;
3. loads the resume point (weights; the optimizer state and epoch go to `fit`);
4. runs `fit`, whose checkpoints reach the caller's `on_checkpoint` (which keeps them with
   `checkpoint_store`: best/last rows, resume files);
5. stores the trained weights as the cluster's next version, unless the run stopped or the caller
   says no (`may_store`: a lost task).

Only this module (its training writes, at the end) and `apps.clusters.services` write checkpoint
rows and cluster configs for training (`tests/test_architecture.py` holds the other apps to it).
Torch is imported when a run starts, not with this module: handlers subclass `TrainingCallbacks`
at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from apps.clusters import runtime
from apps.clusters.models import Checkpoint, Cluster
from apps.clusters.services import checkpoint_path
from ml.callbacks import FitCallbacks

if TYPE_CHECKING:
    import uuid

    import numpy as np
    from torch import Tensor, nn

    from ml.data import StoredInputs
    from ml.training import FitResult, TrainConfig

__all__ = [
    "ResumePoint",
    "TrainingCallbacks",
    "TrainingJob",
    "TrainingOutcome",
    "checkpoint_payload",
    "checkpoint_store",
    "cluster_config_update",
    "cluster_train",
    "scaled_rows",
    "stored_inputs",
    "training_scale",
]


class TrainingCallbacks(FitCallbacks):
    """The caller's side of a run: `fit`'s hooks (progress, stop, checkpoints), when it starts,
    and whether the trained weights may become the cluster's next version."""

    def on_start(self, start_epoch: int) -> None:
        """The model is ready (loaded, resumed) and the cluster's config recorded; `fit` starts
        after `start_epoch` completed epochs."""

    def may_store(self) -> bool:
        """False keeps the cluster's weights as they are (e.g. the task was lost to another
        worker, which trains it again)."""
        return True


@dataclass
class ResumePoint:
    """Where an interrupted run goes on from: the weights and optimizer state saved after
    `epoch` completed epochs."""

    model_state: dict[str, Tensor]
    optimizer_state: dict[str, Any] | None
    epoch: int


@dataclass
class TrainingJob:
    """What to train and how.

    `x`/`x_val`: float32 arrays, or `StoredInputs` (`stored_inputs`: uint8 pixels stay uint8,
    `fit` converts each batch). `record_input_scale`: the factor `x` (and `x_val`) were scaled
    with, merged into the cluster's config; None leaves the config alone (inputs that are not
    scaled, or a trainer whose scale lives with its own checkpoints). `model`: the module to train (weights the caller
    loaded); None: the cluster's current weights, or its initial ones with `initial_weights`.
    `early_stopping` is updated in place by `fit` (keep it with your checkpoints to resume).
    `store_weights`: False when the caller keeps the result itself (a checkpoint, a version).
    """

    config: TrainConfig
    x: np.ndarray | StoredInputs
    y: np.ndarray
    x_val: np.ndarray | StoredInputs | None = None
    y_val: np.ndarray | None = None
    record_input_scale: float | None = None
    model: nn.Module | None = None
    initial_weights: bool = False
    freeze_backbone: bool = False
    resume: ResumePoint | None = None
    early_stopping: dict[str, Any] = field(default_factory=dict)
    augment: Callable[[Tensor], Tensor] | None = None
    device_ids: Sequence[int] | None = None
    store_weights: bool = True


@dataclass
class TrainingOutcome:
    """The trained module, what `fit` did, and the cluster version its weights became (None
    when they were not stored)."""

    model: nn.Module
    fit: FitResult
    cluster_version: int | None = None


def training_scale(cluster: Cluster, x: np.ndarray) -> float:
    """The input scale of a cluster's training: the one stored at its first training, else the
    one `x` needs (`ml.data.input_scale`)."""
    from apps.clusters.selectors import stored_input_scale
    from ml.data import input_scale

    stored = stored_input_scale(cluster=cluster)
    return stored if stored else input_scale(x)


def scaled_rows(x: Any, scale: float) -> np.ndarray:
    """Float32 inputs as rows (`(n, -1)`) times `scale`, copied only where they must be. At
    scale 1 a whole memory-mapped file (the stored MNIST/volume pixels) is mapped again
    copy-on-write (a 60k-sample task kept a private float32 copy beside the map: 460 -> 820 MiB
    of worker memory), an array in memory is used as it is (a learnuplet's 60 MB training set
    was copied for nothing), and only what is read-only otherwise (a slice of a map) is copied,
    so torch gets a writable array; another scale makes one scaled array."""
    import numpy as np

    from ml.data import copy_on_write

    if scale == 1.0 and isinstance(x, np.memmap) and x.dtype == np.float32:
        shared = copy_on_write(x)  # the whole mapped array only (a slice keeps its offset)
        if shared is not x:
            return shared.reshape(len(shared), -1)
    x = np.asarray(x, dtype=np.float32)
    x = x.reshape(len(x), -1)
    if scale != 1.0:
        return x * np.float32(scale)
    return x if x.flags.writeable else x.copy()


def stored_inputs(x: Any, scale: float = 1.0, shape: Sequence[int] | None = None) -> StoredInputs:
    """A dataset's inputs (`dataset_arrays`' array, or its `Float32Inputs` of uint8 pixels) for
    training as they are stored, times `scale`: `fit` converts each batch to the float32 numbers
    a converted copy would hold (the 0..1 factor of uint8 pixels, then `scale`), so no float32
    copy of the whole set is made (60k MNIST images: 188 MB). `shape`: the per-sample shape
    (default: flat rows)."""
    from apps.datasets.selectors import Float32Inputs
    from ml.data import StoredInputs

    factors: tuple[float, ...] = ()
    if isinstance(x, Float32Inputs):
        x, factors = x.stored, (() if x.scale is None else (float(x.scale),))
    rows = x.reshape(len(x), *(shape if shape is not None else (-1,)))
    return StoredInputs(rows, factors).scaled(scale)


def training_inputs(x: Any, scale: float) -> np.ndarray | StoredInputs:
    """A dataset's inputs (`dataset_arrays`' float32 array, or its `Float32Inputs`) times
    `scale`, as `fit` and `evaluate` take them: float32 data as `scaled_rows`, other stored
    dtypes (uint8 MNIST pixels) as `stored_inputs`, converted batch by batch (no float32 copy
    of the whole set)."""
    import numpy as np

    return scaled_rows(x, scale) if isinstance(x, np.ndarray) else stored_inputs(x, scale)


def checkpoint_payload(model_state: dict[str, Tensor], metadata: dict[str, Any]) -> bytes:
    """A checkpoint file's bytes (safetensors, metadata as JSON) for `checkpoint_store`;
    one payload may be stored under several ids (a studio run's best and last)."""
    return runtime.state_bytes(model_state, metadata)


def cluster_train(
    *, cluster: Cluster, job: TrainingJob, callbacks: TrainingCallbacks
) -> TrainingOutcome:
    """Train the cluster's model as `job` says; see the module docstring for the steps."""
    from ml.architectures import freeze_backbone
    from ml.training import FitOptions, fit

    if job.record_input_scale is not None:
        cluster_config_update(cluster=cluster, input_scale=job.record_input_scale)
    model = job.model
    if model is None:
        load = runtime.cluster_build_model if job.initial_weights else runtime.cluster_load_model
        model = load(cluster)
    if job.freeze_backbone:
        freeze_backbone(model)
    options = FitOptions(
        early_stopping_state=job.early_stopping, augment=job.augment, device_ids=job.device_ids
    )
    if job.resume is not None:
        model.load_state_dict(job.resume.model_state)
        options.start_epoch = job.resume.epoch
        options.optimizer_state = job.resume.optimizer_state
    callbacks.on_start(options.start_epoch)
    result = fit(
        model,
        job.x,
        job.y,
        job.config,
        x_val=job.x_val,
        y_val=job.y_val,
        options=options,
        callbacks=callbacks,
    )
    outcome = TrainingOutcome(model=model, fit=result)
    if job.store_weights and not result.stopped and callbacks.may_store():
        outcome.cluster_version = runtime.cluster_store_weights(cluster, model)
    return outcome


# --- training writes: the rows a run keeps (other apps store their checkpoints through these) ----


def cluster_config_update(*, cluster: Cluster, **values: Any) -> bool:
    """Merge `values` into the cluster's config (what training learns about its inputs, such as
    the `input_scale` found on its first training data). Writes only when a value changed, so a
    run that finds the stored values writes nothing; returns whether it wrote."""
    config = cluster.config or {}
    if all(key in config and config[key] == value for key, value in values.items()):
        return False
    cluster.config = {**config, **values}
    Cluster.objects.filter(pk=cluster.pk).update(config=cluster.config)
    return True


def checkpoint_store(
    *,
    checkpoint_id: uuid.UUID | str,
    project_id: str,
    owner_id: int | None,
    name: str,
    cluster: Cluster | None,
    payload: bytes,
    metadata: dict[str, Any],
    visibility: str | None = None,
) -> Checkpoint:
    """Write a checkpoint's file and create or update its row under an id the caller keeps (a
    studio run's `best`/`last`, a learnuplet's `model_end`): the same id always names the latest
    weights. `payload` is a safetensors file (`runtime.state_bytes`); `visibility`, when given,
    is set on creation only."""
    path = checkpoint_path(str(project_id), str(checkpoint_id))
    runtime.atomic_write(path, payload)
    values = {
        "owner_id": owner_id,
        "name": name,
        "cluster": cluster,
        "file": path.name,
        "size_bytes": len(payload),
        "metadata": metadata,
    }
    created = {**values, "visibility": visibility} if visibility is not None else values
    checkpoint, _ = Checkpoint.objects.update_or_create(
        pk=checkpoint_id, project_id=project_id, defaults=values, create_defaults=created
    )
    return checkpoint
