"""Resume checkpoints of a train task are throttled by TASK_CHECKPOINT_INTERVAL_S and never
written after the last epoch (the weights are stored right after it)."""

import pytest

from apps.clusters.services import cluster_task_create
from apps.tasks.context import TaskContext
from tests.clusters.helpers import make_cluster
from tests.tasks.conftest import wait_state


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("interval", "saves"), [(0, 3), (3600, 0)])
def test_resume_checkpoints_follow_the_interval(
    world, digits, stub_worker, settings, monkeypatch, interval, saves
):
    settings.TASK_CHECKPOINT_INTERVAL_S = interval
    calls = []
    original = TaskContext.save_resume
    monkeypatch.setattr(
        TaskContext,
        "save_resume",
        lambda self, state, meta: calls.append(meta["epoch"]) or original(self, state, meta),
    )
    train_set, _ = digits
    task = cluster_task_create(
        project=world.project,
        actor=world.member,
        kind="train",
        name="t",
        cluster=make_cluster(world.project, world.member),
        dataset=train_set,
        params={"epochs": 4},
    )
    done = wait_state(str(task.pk))
    assert done.state == "finished", done.error
    assert len(calls) == saves and calls == list(range(1, saves + 1))
