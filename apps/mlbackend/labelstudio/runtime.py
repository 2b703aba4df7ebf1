"""The weights a backend predicts with, loaded lazily and kept in a small per-process cache.

Nothing is loaded by `/health` or `/setup`; the first `/predict` of a version loads it, later
ones reuse it. The cache key names the exact weights (a checkpoint id, or the cluster's weights
version), so a new training or a rebinding is picked up without any invalidation call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from apps.core.exceptions import Conflict, ValidationFailed

if TYPE_CHECKING:
    from torch import nn

    from apps.clusters.models import Checkpoint, Cluster

CACHE_SIZE = 8

_cache: OrderedDict[tuple, nn.Module] = OrderedDict()
_lock = threading.Lock()


def weights_key(cluster: Cluster, checkpoint: Checkpoint | None) -> tuple:
    if checkpoint is not None:
        return ("checkpoint", str(cluster.pk), str(checkpoint.pk))
    return ("cluster", str(cluster.pk), cluster.version, cluster.updated_at.isoformat())


def load_weights(cluster: Cluster, checkpoint: Checkpoint | None) -> nn.Module:
    """A fresh module of `cluster` with the checkpoint's weights (or the cluster's own)."""
    from apps.clusters import runtime
    from apps.clusters.services import checkpoint_path
    from ml.checkpoints import CheckpointMismatch, load_compatible

    if checkpoint is None:
        return runtime.cluster_load_model(cluster)
    path = checkpoint_path(str(checkpoint.project_id), str(checkpoint.pk))
    if not path.exists():
        raise Conflict("The backend's checkpoint file is missing.")
    state, _meta = runtime.read_state(path)
    model = runtime.cluster_build_model(cluster)
    try:
        load_compatible(model, state)
    except CheckpointMismatch as exc:
        raise ValidationFailed.for_field(
            "checkpoint_id", f"The checkpoint does not fit the model: {exc}"
        ) from None
    model.eval()
    return model


def cached_model(cluster: Cluster, checkpoint: Checkpoint | None) -> nn.Module:
    """The module for predictions (shared: callers must not train it)."""
    key = weights_key(cluster, checkpoint)
    with _lock:
        model = _cache.get(key)
        if model is not None:
            _cache.move_to_end(key)
            return model
    model = load_weights(cluster, checkpoint)
    with _lock:
        _cache[key] = model
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return model


def clear_cache() -> None:
    with _lock:
        _cache.clear()
