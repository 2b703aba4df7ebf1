"""The clusters' training service (apps.clusters.training) and its writes in services: the input
scale recorded once, weights stored as a new version only for a finished run, resuming, and
checkpoint rows kept under the caller's id."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.clusters import runtime
from apps.clusters.models import Checkpoint, Cluster
from apps.clusters.services import checkpoint_path
from apps.clusters.training import (
    ResumePoint,
    TrainingCallbacks,
    TrainingJob,
    checkpoint_payload,
    checkpoint_store,
    cluster_config_update,
    cluster_train,
    training_scale,
)
from ml.training import TrainConfig
from tests.clusters.helpers import make_cluster


@pytest.fixture
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x[:240].astype(np.float32), y[:240].astype(np.int64)  # pixels 0..16


class Recorder(TrainingCallbacks):
    """Keeps every checkpoint; stops after `stop_after` epochs; `store` answers may_store."""

    def __init__(self, *, stop_after: int | None = None, store: bool = True) -> None:
        self.checkpoints: dict[int, tuple[dict, dict]] = {}
        self.started: list[int] = []
        self.stop_after, self.store = stop_after, store

    def on_start(self, start_epoch: int) -> None:
        self.started.append(start_epoch)

    def on_checkpoint(self, epoch: int, model_state: dict, optimizer_state: dict) -> None:
        self.checkpoints[epoch] = (model_state, optimizer_state)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.checkpoints) >= self.stop_after

    def may_store(self) -> bool:
        return self.store


def _job(x, y, scale: float, **extra) -> TrainingJob:
    config = TrainConfig(epochs=4, batch_size=32, seed=3, stop_check_every=1_000)
    return TrainingJob(
        config=config, x=x * np.float32(scale), y=y, record_input_scale=scale, **extra
    )


def _config_writes(queries) -> int:
    return sum(1 for q in queries if q["sql"].startswith("UPDATE") and '"config"' in q["sql"])


def test_training_records_the_scale_once_and_stores_a_new_version(world, digits):
    x, y = digits
    cluster = make_cluster(world.project, world.owner)
    scale = training_scale(cluster, x)
    assert scale == pytest.approx(1 / 16)

    with CaptureQueriesContext(connection) as first:
        outcome = cluster_train(cluster=cluster, job=_job(x, y, scale), callbacks=Recorder())
    cluster.refresh_from_db()
    assert _config_writes(first.captured_queries) == 1
    assert cluster.config["input_scale"] == pytest.approx(scale)
    assert outcome.cluster_version == cluster.version == 1
    assert not outcome.fit.stopped and outcome.fit.epochs_completed == 4
    stored = runtime.cluster_load_model(cluster).state_dict()
    for name, value in outcome.model.state_dict().items():
        assert torch.equal(stored[name], value), name

    # The next training finds the stored scale: the config is not written again.
    assert training_scale(cluster, x * 100) == pytest.approx(scale)
    with CaptureQueriesContext(connection) as second:
        again = cluster_train(cluster=cluster, job=_job(x, y, scale), callbacks=Recorder())
    assert _config_writes(second.captured_queries) == 0
    assert again.cluster_version == 2


def test_a_stopped_or_lost_run_stores_nothing(world, digits):
    x, y = digits
    cluster = make_cluster(world.project, world.owner)
    stopped = cluster_train(
        cluster=cluster, job=_job(x, y, 1 / 16), callbacks=Recorder(stop_after=1)
    )
    assert stopped.fit.stopped and stopped.cluster_version is None
    lost = cluster_train(cluster=cluster, job=_job(x, y, 1 / 16), callbacks=Recorder(store=False))
    assert not lost.fit.stopped and lost.cluster_version is None
    kept = cluster_train(
        cluster=cluster, job=_job(x, y, 1 / 16, store_weights=False), callbacks=Recorder()
    )
    assert kept.cluster_version is None
    cluster.refresh_from_db()
    assert cluster.version == 0
    assert not runtime.weights_path(cluster).exists()


def test_resuming_from_a_checkpoint_gives_the_uninterrupted_weights(world, digits):
    x, y = digits
    cluster = make_cluster(world.project, world.owner)
    job = _job(x, y, 1 / 16, initial_weights=True, store_weights=False)
    full = cluster_train(cluster=cluster, job=job, callbacks=Recorder())

    first = Recorder(stop_after=2)
    job = _job(x, y, 1 / 16, initial_weights=True, store_weights=False)
    cluster_train(cluster=cluster, job=job, callbacks=first)
    model_state, optimizer_state = first.checkpoints[2]

    resumed = Recorder()
    job = _job(
        x,
        y,
        1 / 16,
        initial_weights=True,
        resume=ResumePoint(model_state, optimizer_state, epoch=2),
    )
    outcome = cluster_train(cluster=cluster, job=job, callbacks=resumed)
    assert resumed.started == [2]
    assert [r.epoch for r in outcome.fit.history] == [3, 4]
    assert outcome.cluster_version == 1
    for (name, a), b in zip(
        full.model.state_dict().items(), outcome.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_checkpoint_store_keeps_one_row_per_id(world):
    cluster = make_cluster(world.project, world.owner)
    model = runtime.cluster_load_model(cluster)
    checkpoint_id = uuid.uuid4()

    def store(meta: dict, visibility: str | None = None) -> Checkpoint:
        return checkpoint_store(
            checkpoint_id=checkpoint_id,
            project_id=world.project.pk,
            owner_id=world.owner.pk,
            name="run-last",
            cluster=cluster,
            payload=checkpoint_payload(model.state_dict(), meta),
            metadata=meta,
            visibility=visibility,
        )

    created = store({"epoch": 1}, visibility="private")
    updated = store({"epoch": 2}, visibility="shared")  # visibility is set on creation only
    assert Checkpoint.objects.filter(pk=checkpoint_id).count() == 1
    assert updated.metadata == {"epoch": 2} and updated.visibility == created.visibility
    assert created.visibility == "private"
    path = checkpoint_path(str(world.project.pk), str(checkpoint_id))
    state, meta = runtime.read_state(path)
    assert meta == {"epoch": 2} and updated.size_bytes == path.stat().st_size
    assert set(state) == set(model.state_dict())


def test_cluster_config_update_writes_only_changes(world):
    cluster = make_cluster(world.project, world.owner)
    seed = cluster.config["seed"]
    assert cluster_config_update(cluster=cluster, input_scale=0.5)
    assert not cluster_config_update(cluster=cluster, input_scale=0.5)
    assert Cluster.objects.get(pk=cluster.pk).config == {"seed": seed, "input_scale": 0.5}
