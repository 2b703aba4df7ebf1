"""What running one request task costs the worker in database round trips (issue #22: a request
task took 22 on PostgreSQL, a third of them reading back rows the worker had just written)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.clusters.models import RequestResult
from apps.clusters.services import cluster_task_create, request_result_store
from apps.tasks import runner
from apps.tasks.models import Task
from tests.clusters.helpers import make_cluster

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_heartbeat_thread(settings):
    settings.TASK_HEARTBEAT_INTERVAL_S = 3600  # the runner runs inside the test's transaction


def _request(world, dataset, cluster):
    return cluster_task_create(
        project=world.project,
        actor=world.owner,
        kind="request",
        name="r",
        cluster=cluster,
        dataset=dataset,
    )


def test_a_request_task_reads_back_nothing_it_wrote(world, digits, monkeypatch):
    import time

    monkeypatch.setattr(runner, "_last_reap", time.monotonic())  # no reaper pass in this run
    _, test_set = digits
    cluster = make_cluster(world.project, world.owner)
    first, second = (_request(world, test_set, cluster) for _ in range(2))
    with CaptureQueriesContext(connection) as queries:
        runner.task_run(str(first.pk))
    task = Task.objects.get(pk=first.pk)
    assert task.state == "finished", task.error
    assert RequestResult.objects.get(pk=first.pk).dataset_id == test_set.pk
    sql = [q["sql"] for q in queries.captured_queries]
    # Claim: look, lock (savepoint here; PostgreSQL also takes the target's advisory lock),
    # check order and share, update, read the claimed row. Handler: cluster, dataset, store the
    # result. End: update, wake the second task.
    limit = 17 if connection.vendor == "postgresql" else 16
    assert len(sql) <= limit, "\n".join(sql)
    assert not any("tasks_taskevent" in q for q in sql)  # no stored events: no seq lookup
    assert sum('FROM "tasks_requestresult"' in q for q in sql) == 0  # inserted, not looked up
    assert Task.objects.get(pk=second.pk).state == "queued"


def test_storing_a_request_result_again_replaces_it(world, digits):
    """A second attempt of a request task stores over the first attempt's result."""
    _, test_set = digits
    task = _request(world, test_set, make_cluster(world.project, world.owner))
    request_result_store(task=task, classes=[0, 1, 2], summary={"n": 1})
    first = RequestResult.objects.get(pk=task.pk)
    request_result_store(task=task, classes=[1, 1], summary={"n": 2})
    again = RequestResult.objects.get(pk=task.pk)
    assert RequestResult.objects.filter(pk=task.pk).count() == 1
    assert (again.num_samples, again.summary, again.dataset_id) == (2, {"n": 2}, test_set.pk)
    assert again.created_at == first.created_at and again.updated_at > first.updated_at
