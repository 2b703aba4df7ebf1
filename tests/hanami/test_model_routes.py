"""Conformance of the cluster, task, result, checkpoint, host and log routes: the SDK's exact
requests, the answers' shapes, and bad input folded into the five status codes the SDK knows."""

import base64
import uuid

import pytest

from apps.clusters.services import cluster_set_mode, request_result_store
from apps.tasks.models import Task, target_of
from tests.clusters.helpers import DIGITS_TEMPLATE, make_cluster
from tests.factories import PASSWORD
from tests.hanami.conftest import SDK, token_for

pytestmark = pytest.mark.django_db

B64 = base64.b64encode(DIGITS_TEMPLATE.encode()).decode()


@pytest.fixture
def bob(world):
    return SDK(token_for("bob", PASSWORD))


def _error(response, status):
    assert response.status_code == status, response.content
    assert set(response.json()) == {"error"} and response.json()["error"]
    return response.json()["error"]


def test_cluster_create_get_list_delete(world, bob):
    created = bob.post("cluster", {"name": "test_cluster", "template": B64}).json()
    assert created == {
        "name": "test_cluster",
        "owner_id": "bob",
        "project_id": world.project.pk,
        "uuid": created["uuid"],
        "visibility": "shared",
    }
    assert bob.get("cluster", uuid=created["uuid"]).json() == created
    listing = bob.get("cluster/all").json()
    assert listing == {
        "header": ["uuid", "project_id", "owner_id", "visibility", "name"],
        "body": [[created["uuid"], world.project.pk, "bob", "shared", "test_cluster"]],
    }
    assert bob.delete("cluster", uuid=created["uuid"]).status_code == 200
    _error(bob.delete("cluster", uuid=created["uuid"]), 404)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"name": "c", "template": "%%%"}, 400, "base64"),
        ({"name": "c", "template": base64.b64encode(b"\xff\xfe").decode()}, 400, "base64"),
        ({"name": "c", "template": base64.b64encode(b"version: 1\nbricks:\n").decode()}, 400, ""),
        ({"name": "c"}, 400, "template"),
        ({"template": B64}, 400, "name"),
    ],
)
def test_cluster_create_bad_input(world, bob, body, status, reason):
    assert reason in _error(bob.post("cluster", body), status)


def test_malformed_and_unknown_ids(world, bob):
    _error(bob.get("cluster", uuid="fail_cluster"), 400)  # like upstream: BadRequest
    _error(bob.get("cluster", uuid=str(uuid.uuid4())), 404)
    _error(bob.get("cluster"), 400)
    _error(bob.get("task", uuid=str(uuid.uuid4()), cluster_uuid=str(uuid.uuid4())), 404)
    _error(bob.get("task/all"), 400)
    _error(bob.get("request_result", uuid="x"), 400)
    _error(bob.delete("checkpoint", uuid=str(uuid.uuid4())), 404)
    _error(bob.post("cluster/save", {"name": "c", "cluster_uuid": "nope"}), 400)


def test_task_routes_and_mode_rules(world, bob, digits_ids):
    train_uuid, _ = digits_ids
    cluster = bob.post("cluster", {"name": "c", "template": B64}).json()["uuid"]
    body = {"name": "t", "type": "train", "cluster_uuid": cluster, "dataset_uuid": train_uuid}
    _error(bob.post("task", {**body, "type": "fly"}), 400)
    _error(bob.post("task", {**body, "dataset_uuid": str(uuid.uuid4())}), 404)
    task = bob.post("task", body).json()
    assert set(task) == {"uuid", "name"}
    got = bob.get("task", uuid=task["uuid"], cluster_uuid=cluster).json()
    assert got["state"] == "queued" and got["percentage_finished"] == 0.0
    assert got["start_timestamp"] == got["end_timestamp"] == "-"
    assert len(got["queue_timestamp"]) == 19  # YYYY-MM-DD HH:MM:SS
    # Another cluster's uuid beside the task's: not found.
    other = bob.post("cluster", {"name": "d", "template": B64}).json()["uuid"]
    _error(bob.get("task", uuid=task["uuid"], cluster_uuid=other), 404)

    _error(bob.put("cluster/set_mode", {"new_state": "DIRECT", "uuid": cluster}), 409)
    _error(bob.put("cluster/set_mode", {"new_state": "SIDEWAYS", "uuid": cluster}), 400)
    # Deleting a queued task aborts and removes it (a running one stops between two steps).
    assert bob.delete("task", uuid=task["uuid"], cluster_uuid=cluster).status_code == 200
    _error(bob.get("task", uuid=task["uuid"], cluster_uuid=cluster), 404)
    assert Task.objects.filter(pk=task["uuid"]).count() == 0
    assert bob.get("task/all", cluster_uuid=cluster).json()["body"] == []

    switched = bob.put("cluster/set_mode", {"new_state": "DIRECT", "uuid": cluster}).json()
    assert switched["uuid"] == cluster
    assert "DIRECT" in _error(bob.post("task", body), 409)
    assert bob.put("cluster/set_mode", {"new_state": "TASK", "uuid": cluster}).status_code == 200


def test_failed_tasks_show_as_aborted_with_their_error(world, bob):
    cluster = make_cluster(world.project, world.member)
    task = Task.objects.create(
        project=world.project,
        owner=world.member,
        kind="train",
        name="t",
        **target_of(cluster),
        state="failed",
        error="boom",
    )
    got = bob.get("task", uuid=str(task.pk), cluster_uuid=str(cluster.pk)).json()
    assert (got["state"], got["error"]) == ("aborted", "boom")
    # A handler's refusal names the SDK's field (the shared handlers name the main API's).
    Task.objects.filter(pk=task.pk).update(error="dataset_id: The dataset has 3 input values")
    got = bob.get("task", uuid=str(task.pk), cluster_uuid=str(cluster.pk)).json()
    assert got["error"] == "dataset_uuid: The dataset has 3 input values"


def test_checkpoints_results_and_check(world, bob, digits_ids):
    _, test_uuid = digits_ids
    cluster = make_cluster(world.project, world.member)
    saved = bob.post("cluster/save", {"name": "ck", "cluster_uuid": str(cluster.pk)}).json()
    rows = bob.get("checkpoint/all").json()["body"]
    assert rows == [[saved["uuid"], world.project.pk, "bob", "shared", "ck"]]
    # Restoring into a cluster of another shape is refused with the reason.
    small = bob.post(
        "cluster",
        {
            "name": "s",
            "template": base64.b64encode(DIGITS_TEMPLATE.replace("128", "7").encode()).decode(),
        },
    ).json()["uuid"]
    refused = bob.post("cluster/load", {"checkpoint_uuid": saved["uuid"], "cluster_uuid": small})
    # The shared service names the main API's field; the SDK sent checkpoint_uuid.
    assert _error(refused, 400).startswith("checkpoint_uuid: does not fit this cluster")
    cluster_set_mode(cluster=cluster, mode="DIRECT")
    body = {"checkpoint_uuid": saved["uuid"], "cluster_uuid": str(cluster.pk)}
    _error(bob.post("cluster/load", body), 409)

    task = Task.objects.create(
        project=world.project, owner=world.member, kind="request", name="req", state="finished"
    )
    request_result_store(task=task, classes=list(range(10)) * 36)
    got = bob.get("request_result", uuid=str(task.pk)).json()
    assert got == {
        "name": "req",
        "owner_id": "bob",
        "project_id": world.project.pk,
        "uuid": str(task.pk),
        "visibility": "shared",
        "data": list(range(10)) * 36,
    }
    check = bob.post("dataset/check", {"result_uuid": str(task.pk), "dataset_uuid": test_uuid})
    assert 0.0 <= check.json()["accuracy"] <= 100.0
    _error(bob.post("dataset/check", {"result_uuid": str(task.pk)}), 400)
    # The SDK's `dataset.check_mnist_dataset` (upstream OpenHanami 84e633ac) asks the same thing
    # as GET /control/v1/dataset/check?dataset_uuid=..&result_uuid=.. (was 404 before).
    got = bob.get("dataset/check", dataset_uuid=test_uuid, result_uuid=str(task.pk))
    assert got.status_code == 200, got.content
    assert got.json() == check.json()
    _error(bob.get("dataset/check", dataset_uuid=test_uuid), 400)
    _error(bob.get("dataset/check", dataset_uuid=test_uuid, result_uuid="nope"), 400)
    assert bob.delete("request_result", uuid=str(task.pk)).status_code == 200
    assert bob.get("request_result/all").json()["body"] == []


def test_hosts_and_switch_host(world, bob):
    hosts = bob.get("host/all").json()
    assert hosts["header"] == ["uuid", "type"]
    cpu_uuid, kind = hosts["body"][0]
    assert kind == "cpu" and uuid.UUID(cpu_uuid)
    assert bob.get("host/all").json() == hosts, "host uuids are stable"
    cluster = bob.post("cluster", {"name": "c", "template": B64}).json()["uuid"]
    switched = bob.put("cluster/switch_host", {"cluster_uuid": cluster, "host_uuid": cpu_uuid})
    assert switched.json()["uuid"] == cluster
    body = {"cluster_uuid": cluster, "host_uuid": str(uuid.uuid4())}
    _error(bob.put("cluster/switch_host", body), 404)


def test_viewers_cannot_create_or_train(world, digits_ids):
    carol = SDK(token_for("carol", PASSWORD))
    _error(carol.post("cluster", {"name": "c", "template": B64}), 401)
    cluster = make_cluster(world.project, world.member)
    body = {
        "name": "t",
        "type": "train",
        "cluster_uuid": str(cluster.pk),
        "dataset_uuid": digits_ids[0],
    }
    _error(carol.post("task", body), 401)


def test_audit_and_error_logs(world, bob):
    bob.get("cluster/all")
    bob.post("cluster", {"name": "c", "template": "%%%"})
    log = bob.get("audit_log", page=0).json()
    assert log["header"] == ["timestamp", "user_id", "endpoint", "request_type"]
    assert [row[1:] for row in log["body"][:2]] == [
        ["bob", "/control/v1/cluster", "POST"],
        ["bob", "/control/v1/cluster/all", "GET"],
    ]
    assert bob.get("audit_log", page=5).json()["body"] == []
    for far in (2**62, 2**63 - 1, 10**30):  # past any offset the database takes: still empty
        for log in ("audit_log", "error_log"):
            answer = bob.get(log, page=far)
            assert answer.status_code == 200 and answer.json()["body"] == [], (log, far)
    _error(bob.get("audit_log", page="x"), 400)
    _error(bob.get("audit_log", page=-1), 400)
    _error(bob.get("audit_log", user_id="alice"), 401)
    admin = SDK(token_for("root", PASSWORD))
    rows = admin.get("audit_log", user_id="bob").json()["body"]
    assert len(rows) >= 4 and all(row[1] == "bob" for row in rows)
    errors = bob.get("error_log").json()
    assert errors == {
        "header": ["timestamp", "user_id", "component", "context", "values"],
        "body": [],
    }


@pytest.fixture
def digits_ids(world):
    from apps.datasets.demo import create_demo_datasets
    from apps.datasets.models import Dataset

    create_demo_datasets(project=world.project, actor=world.owner)
    qs = Dataset.objects.filter(project=world.project)
    qs.update(visibility="shared")
    return str(qs.get(name="digits-train").pk), str(qs.get(name="digits-test").pk)
