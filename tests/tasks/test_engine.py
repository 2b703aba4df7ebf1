"""The job engine through the API with a real Dramatiq worker on the stub broker."""

import pytest
from dramatiq.brokers.stub import StubBroker

from apps.clusters.models import Cluster
from apps.tasks.models import Task, TaskEvent, target_of
from tests.clusters.helpers import make_cluster
from tests.conftest import client_for
from tests.tasks.conftest import wait_for, wait_state


def _tasks_url(project, *parts):
    return "/".join([f"/api/projects/{project.pk}/tasks", *parts])


def _create(client, project, kind, cluster, dataset, name="job", **params):
    r = client.post(
        _tasks_url(project),
        {
            "name": name,
            "kind": kind,
            "cluster_id": str(cluster.pk),
            "dataset_id": str(dataset.pk),
            "params": params,
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    return r.json()["data"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_train_request_check_reaches_97_percent(world, digits, stub_worker):
    train_set, test_set = digits
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)

    train = _create(client, world.project, "train", cluster, train_set, name="fit")
    assert train["state"] == "queued" and train["queue"] == "cpu"
    done = wait_state(train["id"])
    assert done.state == "finished", (done.error, done.traceback)
    assert done.progress == 1.0 and done.attempts == 1
    assert done.result["epochs_completed"] == 20
    assert Cluster.objects.get(pk=cluster.pk).version == 1
    assert TaskEvent.objects.filter(task_id=done.pk, kind="epoch").count() == 20

    request = _create(client, world.project, "request", cluster, test_set, name="predict")
    done = wait_state(request["id"])
    assert done.state == "finished", (done.error, done.traceback)

    results = client.get(f"/api/projects/{world.project.pk}/results").json()["data"]["items"]
    assert [(r["id"], r["name"]) for r in results] == [(request["id"], "predict")]
    detail = client.get(f"/api/projects/{world.project.pk}/results/{request['id']}?limit=5")
    assert detail.json()["data"]["num_samples"] == 360
    assert len(detail.json()["data"]["outputs"]) == 5

    r = client.post(
        f"/api/projects/{world.project.pk}/results/{request['id']}/check",
        {"dataset_id": str(test_set.pk)},
        format="json",
    )
    assert r.status_code == 200, r.content
    assert r.json()["data"]["accuracy"] >= 97.0

    # A redelivered message for a finished task does nothing.
    from apps.tasks.runner import task_run

    before = Task.objects.get(pk=request["id"])
    task_run(request["id"])
    after = Task.objects.get(pk=request["id"])
    assert (after.state, after.attempts, after.finished_at) == (
        before.state,
        before.attempts,
        before.finished_at,
    )


@pytest.mark.django_db(transaction=True)
def test_abort_queued_task(world, digits, stub_broker):
    train_set, _ = digits
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    task = _create(client, world.project, "train", cluster, train_set)
    is_stub = isinstance(stub_broker, StubBroker)
    if is_stub:
        assert stub_broker.queues["cpu"].qsize() == 1

    r = client.delete(_tasks_url(world.project, task["id"]))
    assert r.status_code == 200 and r.json()["data"]["state"] == "aborted"

    # The message is still delivered later: it must be a no-op.
    if is_stub:
        import dramatiq

        worker = dramatiq.Worker(stub_broker, worker_timeout=100, worker_threads=1)
        worker.start()
        try:
            stub_broker.join("cpu")
            worker.join()
        finally:
            worker.stop()
    else:
        from apps.tasks.runner import task_run

        task_run(task["id"])
    row = Task.objects.get(pk=task["id"])
    assert row.state == "aborted" and row.attempts == 0 and row.started_at is None


@pytest.mark.django_db(transaction=True)
def test_retry_route_queues_an_aborted_task_again(world, digits, stub_broker):
    train_set, _ = digits
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    task = _create(client, world.project, "request", cluster, train_set)
    retry_url = _tasks_url(world.project, task["id"], "retry")
    assert client.post(retry_url).status_code == 409  # queued: nothing to retry
    assert client.delete(_tasks_url(world.project, task["id"])).status_code == 200
    assert client_for(world.viewer).post(retry_url).status_code == 403
    r = client.post(retry_url)
    assert r.status_code == 200 and r.json()["data"]["state"] == "queued", r.content
    assert r.json()["data"]["attempts"] == 0

    import dramatiq

    worker = dramatiq.Worker(stub_broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        done = wait_state(task["id"], timeout=60)
    finally:
        worker.stop()
    assert done.state == "finished", (done.error, done.traceback)
    assert client.post(retry_url).status_code == 409  # finished: nothing to retry


@pytest.mark.django_db(transaction=True)
def test_a_finished_task_wakes_the_next_of_its_cluster_at_once(
    world, digits, stub_broker, settings
):
    """Tasks of one cluster ran one per TASK_ORDER_RETRY_MS round (2-3 tasks/s): with the round
    set to ten minutes, three tasks still finish, because each end sends the next at once."""
    settings.TASK_ORDER_RETRY_MS = 600_000
    _, test_set = digits
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    ids = [_create(client, world.project, "request", cluster, test_set)["id"] for _ in range(3)]
    import dramatiq

    # Two threads: the second task's message arrives while the first runs, and must wait.
    worker = dramatiq.Worker(stub_broker, worker_timeout=100, worker_threads=2)
    worker.start()
    try:
        for task_id in ids:
            done = wait_state(task_id, timeout=60)
            assert done.state == "finished", (done.error, done.traceback)
    finally:
        worker.stop()
    started = [Task.objects.get(pk=i).started_at for i in ids]
    assert started == sorted(started)  # still in order


@pytest.mark.django_db(transaction=True)
def test_abort_running_task(world, digits, stub_worker):
    train_set, _ = digits
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    task = _create(client, world.project, "train", cluster, train_set, epochs=2000)
    wait_for(lambda: Task.objects.filter(pk=task["id"], state="active", progress__gt=0).exists())

    r = client.delete(_tasks_url(world.project, task["id"]))
    assert r.status_code == 200 and r.json()["data"]["stop_requested"] is True
    done = wait_state(task["id"], timeout=30)
    assert done.state == "aborted", (done.error, done.traceback)
    assert done.finished_at is not None
    assert Cluster.objects.get(pk=cluster.pk).version == 0  # partial training is not stored


@pytest.mark.django_db(transaction=True)
def test_tasks_of_one_cluster_run_in_order(world, digits, stub_broker):
    import dramatiq

    train_set, test_set = digits
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    first = _create(client, world.project, "train", cluster, train_set, name="a", epochs=4)
    second = _create(client, world.project, "request", cluster, test_set, name="b")
    third = _create(client, world.project, "train", cluster, train_set, name="c", epochs=1)
    # Two threads: without ordering the request would run alongside the first training.
    worker = dramatiq.Worker(stub_broker, worker_timeout=100, worker_threads=2)
    worker.start()
    try:
        rows = [wait_state(t["id"]) for t in (first, second, third)]
    finally:
        worker.stop()
    assert [r.state for r in rows] == ["finished"] * 3, [r.error for r in rows]
    assert rows[0].finished_at <= rows[1].started_at
    assert rows[1].finished_at <= rows[2].started_at
    assert [r.sequence for r in rows] == [1, 2, 3]
    assert Cluster.objects.get(pk=cluster.pk).version == 2


@pytest.mark.django_db
def test_create_validation(world, digits):
    train_set, _ = digits
    cluster = make_cluster(world.project, world.member)
    client = client_for(world.member)
    url = _tasks_url(world.project)
    base = {"name": "x", "kind": "train", "cluster_id": str(cluster.pk)}

    r = client.post(
        url, {**base, "dataset_id": str(train_set.pk), "params": {"epochs": 0}}, format="json"
    )
    assert r.status_code == 422 and "epochs" in r.json()["error"]["message"]
    r = client.post(url, {**base, "dataset_id": str(train_set.pk), "kind": "dance"}, format="json")
    assert r.status_code == 422

    foreign = make_cluster(world.other_project, world.outsider)
    r = client.post(
        url, {**base, "cluster_id": str(foreign.pk), "dataset_id": str(train_set.pk)}, format="json"
    )
    assert r.status_code == 422

    wrong = make_cluster(world.project, world.member, name="wide", text=_template(inputs=100))
    r = client.post(
        url, {**base, "cluster_id": str(wrong.pk), "dataset_id": str(train_set.pk)}, format="json"
    )
    assert r.status_code == 422 and "64 input values" in r.json()["error"]["message"]

    r = client_for(world.viewer).post(url, {**base, "dataset_id": str(train_set.pk)}, format="json")
    assert r.status_code == 403
    assert not Task.objects.exists()


def _template(**kw):
    from tests.clusters.helpers import template

    return template(**kw)


@pytest.mark.django_db
def test_list_filters(world):
    a = make_cluster(world.project, world.owner)
    b = make_cluster(world.project, world.owner, name="b")
    Task.objects.create(project=world.project, kind="train", name="1", **target_of(a))
    Task.objects.create(
        project=world.project, kind="train", name="2", **target_of(b), state="finished"
    )
    client = client_for(world.viewer)
    items = client.get(_tasks_url(world.project) + f"?cluster={a.pk}").json()["data"]["items"]
    assert [t["name"] for t in items] == ["1"]
    items = client.get(_tasks_url(world.project) + "?state=finished").json()["data"]["items"]
    assert [t["name"] for t in items] == ["2"]
    assert client.get(_tasks_url(world.project) + "?state=bogus").status_code == 422
