"""Building a cluster's torch module and reading/writing its weights.

Used by the task handlers and, later, by the direct-io runtime. Weights are safetensors (never
pickle); a write goes to a temporary file in the same directory and is renamed over the old one,
so a reader sees either the old or the new weights, never half a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from apps.core.storage import (  # noqa: F401 - state I/O re-exported for the cluster's users
    META_KEY,
    atomic_write,
    project_local_dir,
    read_state,
    state_bytes,
    write_state,
)

if TYPE_CHECKING:
    from torch import nn

    from apps.clusters.models import Cluster

WEIGHTS_FILE = "weights.safetensors"


def cluster_dir(cluster: Cluster) -> Path:
    return project_local_dir(str(cluster.project_id), "clusters", str(cluster.pk))


def weights_path(cluster: Cluster) -> Path:
    return cluster_dir(cluster) / WEIGHTS_FILE


def build_module(*, source: str, template: str, config: dict[str, Any]) -> nn.Module:
    """A freshly initialised module for a cluster description (seeded by `config["seed"]`)."""
    seed = config.get("seed")
    if source == "template":
        from ml.networks import build_network
        from ml.templates import parse_template

        return build_network(parse_template(template), seed=seed)
    from ml.architectures import build_architecture

    return build_architecture(
        source,
        input_shape=tuple(config["input_shape"]),
        num_classes=int(config["num_classes"]),
        seed=seed,
    )


def cluster_build_model(cluster: Cluster) -> nn.Module:
    """The cluster's module with initial (untrained) weights."""
    return build_module(source=cluster.source, template=cluster.template, config=cluster.config)


def cluster_load_model(cluster: Cluster) -> nn.Module:
    """The cluster's module with its current weights (initial ones when never trained)."""
    model = cluster_build_model(cluster)
    path = weights_path(cluster)
    if path.exists():
        state, _meta = read_state(path)
        model.load_state_dict(state)
    model.eval()
    return model


def cluster_store_weights(cluster: Cluster, model: nn.Module, *, bump_version: bool = True) -> int:
    """Replace the cluster's weights file atomically; returns the new version.

    The version counter is bumped with a conditional F() update so concurrent writers never lose
    an increment.
    """
    from django.db.models import F

    from apps.clusters.models import Cluster as ClusterModel

    write_state(weights_path(cluster), model.state_dict(), cluster_metadata(cluster))
    if bump_version:
        ClusterModel.objects.filter(pk=cluster.pk).update(version=F("version") + 1)
        cluster.refresh_from_db(fields=["version", "updated_at"])
    return cluster.version


def cluster_metadata(cluster: Cluster) -> dict[str, Any]:
    """What a checkpoint must carry to be restored into any compatible cluster."""
    return {
        "format": "orchard.cluster.v1",
        "source": cluster.source,
        "template": cluster.template,
        "shape": cluster.shape,
        "config": cluster.config,
        "cluster_id": str(cluster.pk),
        "cluster_version": cluster.version,
    }
