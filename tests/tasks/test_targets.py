"""The engine's generic target (#15): the tasks of a cluster name it as their target, the clusters
app removes them with the cluster, the dataset a task reads lives in the datasets app, and the
migration moved the old foreign keys there."""

import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.clusters.services import cluster_delete, cluster_task_create
from apps.datasets.models import TaskDataset
from apps.datasets.services import dataset_delete
from apps.tasks import registry, runner
from apps.tasks.models import Task, target_of
from tests.clusters.helpers import make_cluster
from tests.conftest import client_for


@pytest.fixture
def noop_kind():
    registry.register("target-noop", lambda ctx: None)


@pytest.mark.django_db
def test_deleting_a_cluster_removes_its_tasks_only(world, noop_kind):
    doomed = make_cluster(world.project, world.owner, name="doomed")
    kept = make_cluster(world.project, world.owner, name="kept")
    first = cluster_task_create(
        project=world.project, actor=world.owner, kind="target-noop", name="a", cluster=doomed
    )
    second = cluster_task_create(
        project=world.project, actor=world.owner, kind="target-noop", name="b", cluster=doomed
    )
    other = cluster_task_create(
        project=world.project, actor=world.owner, kind="target-noop", name="c", cluster=kept
    )
    assert (first.target_type, first.target_id) == ("clusters.cluster", doomed.pk)
    assert [first.sequence, second.sequence, other.sequence] == [1, 2, 1]

    cluster_delete(cluster=doomed)

    assert not Task.objects.filter(pk__in=[first.pk, second.pk]).exists()
    assert list(Task.objects.filter(**target_of(kept))) == [other]


@pytest.mark.django_db
def test_a_cluster_deleted_any_other_way_takes_its_tasks_too(world, noop_kind):
    cluster = make_cluster(world.project, world.owner)
    task = cluster_task_create(
        project=world.project, actor=world.owner, kind="target-noop", name="a", cluster=cluster
    )
    cluster.delete()  # the admin, a project's deletion: no service involved
    assert not Task.objects.filter(pk=task.pk).exists()


@pytest.mark.django_db
def test_deleting_a_dataset_keeps_the_history_and_a_queued_task_fails_clearly(world, digits):
    train_set, _ = digits
    cluster = make_cluster(world.project, world.owner)
    task = cluster_task_create(
        project=world.project,
        actor=world.owner,
        kind="train",
        name="fit",
        cluster=cluster,
        dataset=train_set,
        params={"epochs": 1},
    )
    url = f"/api/projects/{world.project.pk}/tasks/{task.pk}"
    client = client_for(world.owner)
    assert client.get(url).json()["data"]["dataset_id"] == str(train_set.pk)

    dataset_delete(dataset=train_set)

    shown = client.get(url).json()["data"]
    assert shown["dataset_id"] is None and shown["cluster_id"] == str(cluster.pk)
    runner.task_run(str(task.pk))
    task.refresh_from_db()
    assert task.state == "failed"
    assert task.error == "dataset_id: The task's dataset was deleted."


OLD = [
    ("clusters", "0001_initial"),
    ("datasets", "0001_initial"),
    ("tasks", "0002_task_sent_at"),
]


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_cluster_and_dataset_links(world, digits):
    train_set, _ = digits
    cluster = make_cluster(world.project, world.owner)
    executor = MigrationExecutor(connection)
    executor.migrate(OLD)
    old = executor.loader.project_state(OLD).apps.get_model("tasks", "Task")
    with_both = old.objects.create(
        id=uuid.uuid4(),
        project_id=world.project.pk,
        name="fit",
        kind="train",
        cluster_id=cluster.pk,
        dataset_id=train_set.pk,
        sequence=1,
    )
    plain = old.objects.create(id=uuid.uuid4(), project_id=world.project.pk, name="p", kind="x")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    moved = Task.objects.get(pk=with_both.pk)
    assert (moved.target_type, moved.target_id, moved.sequence) == (
        "clusters.cluster",
        cluster.pk,
        1,
    )
    assert TaskDataset.objects.get(task_id=moved.pk).dataset_id == train_set.pk
    untouched = Task.objects.get(pk=plain.pk)
    assert (untouched.target_type, untouched.target_id) == ("", None)
    assert not TaskDataset.objects.filter(task_id=plain.pk).exists()
