"""Runs through the API with a real Dramatiq worker on the stub broker: start, status and
metrics, checkpoints, stop, resume from the last checkpoint, TRAINING_IN_PROGRESS, failure, delete."""

import pytest

from apps.clusters.models import Checkpoint, Cluster
from apps.tasks.models import Task, TaskEvent
from apps.training.models import Run
from apps.training.selectors import run_checkpoint_get
from tests.conftest import client_for
from tests.training.conftest import create_experiment, exp_url, run_url, start_run, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"architecture": "mlp", "input_size": [64], "batch_size": 32}


@pytest.fixture(autouse=True)
def _fast_engine(settings):
    # Pick up stop requests quickly (the heartbeat thread reads them).
    settings.TASK_HEARTBEAT_INTERVAL_S = 0.05
    settings.TASK_EVENT_INTERVAL_S = 0.05


def _run(client, project, run_id):
    r = client.get(run_url(project, run_id))
    assert r.status_code == 200, r.content
    return r.json()["data"]


def _wait_status(client, project, run_id, statuses, timeout=60):
    return wait_for(
        lambda: (d := _run(client, project, run_id))["status"] in statuses and d, timeout
    )


def _kinds(run_id):
    task_id = Run.objects.get(pk=run_id).task_id
    return list(
        TaskEvent.objects.filter(task_id=task_id).order_by("seq").values_list("kind", flat=True)
    )


def test_a_run_trains_records_metrics_and_checkpoints(world, small_digits, stub_worker):
    train, test = small_digits
    client = client_for(world.owner)
    exp = create_experiment(
        client,
        world.project,
        dataset_id=str(train.pk),
        val_dataset_id=str(test.pk),
        epochs=3,
        **FAST,
    )
    started = start_run(client, world.project, exp["id"])
    assert started["run_id"].startswith("run-") and started["run_id"] == started["id"]
    assert started["status"] == "pending" and started["experiment_id"] == exp["id"]

    done = _wait_status(client, world.project, started["run_id"], {"completed", "failed"})
    assert done["status"] == "completed", done["error"]
    assert done["epochs_completed"] == 3 and done["progress"] == 1.0
    assert list(done["best_metric"]) == ["val_accuracy"] and 1 <= done["best_epoch"] <= 3
    epochs = done["metrics"]["epochs"]
    assert [m["epoch"] for m in epochs] == [1, 2, 3]
    assert all(m["val_accuracy"] is not None and "val_f1" in m for m in epochs)
    assert done["best_value"] == max(m["val_accuracy"] for m in epochs)
    assert done["best_metric"]["val_accuracy"] == done["best_value"]
    assert done["final_metrics"] == {k: v for k, v in epochs[-1].items() if k != "epoch"}
    assert done["checkpoints"]["last"]["epoch"] == 3 and done["error"] is None
    assert done["config"]["architecture"] == "mlp" and done["config"]["class_names"][0] == "0"

    metrics = client.get(run_url(world.project, done["id"], "metrics")).json()["data"]
    assert metrics["epochs"] == epochs and metrics["max_epochs"] == 3
    assert _kinds(done["id"]) == ["status", "epoch_end", "epoch_end", "epoch_end", "complete"]

    run = Run.objects.get(pk=done["id"])
    best, last = (
        run_checkpoint_get(run=run, which="best"),
        run_checkpoint_get(run=run, which="last"),
    )
    assert str(last.pk) == done["last_checkpoint_id"] and last.metadata["epoch"] == 3
    assert last.metadata["which"] == "last" and last.metadata["input_size"] == [64]
    assert best.metadata["epoch"] == done["best_epoch"] and best.cluster_id == run.cluster_id
    cluster = Cluster.objects.get(pk=run.cluster_id)
    assert cluster.version == 1
    # The training service recorded the input scale in the cluster's config before the first
    # epoch, so every checkpoint's config carries it; one row per kept checkpoint (best, last).
    assert cluster.config["input_scale"] == last.metadata["input_scale"]
    assert best.metadata["config"]["input_scale"] == last.metadata["input_scale"]
    assert Checkpoint.objects.filter(cluster_id=run.cluster_id).count() == 2
    # The run's checkpoints restore into its cluster like any checkpoint.
    r = client.post(
        f"/api/projects/{world.project.pk}/checkpoints/{best.pk}/restore",
        {"cluster_id": str(run.cluster_id)},
        format="json",
    )
    assert r.status_code == 200, r.content
    listed = client.get(exp_url(world.project, exp["id"], "runs")).json()["data"]
    assert [r["id"] for r in listed["items"]] == [done["id"]]
    assert client.get(exp_url(world.project, exp["id"])).json()["data"]["runs_count"] == 1
    all_runs = client.get(f"/api/training/{world.project.pk}/runs?status=completed").json()
    assert all_runs["data"]["total"] == 1
    r = client.get(f"/api/training/{world.project.pk}/runs?status=done")
    assert r.status_code == 422 and "status" in r.json()["error"]["details"]


def test_stop_resume_in_progress_and_delete(world, small_digits, stub_worker):
    train, _ = small_digits
    client = client_for(world.owner)
    exp = create_experiment(client, world.project, dataset_id=str(train.pk), epochs=400, **FAST)
    run_id = start_run(client, world.project, exp["id"])["run_id"]

    # A second run of the same experiment, and deleting this one, wait for it to end.
    r = client.post(exp_url(world.project, exp["id"], "run"), format="json")
    assert r.status_code == 409 and r.json()["error"]["code"] == "TRAINING_IN_PROGRESS"
    r = client.delete(run_url(world.project, run_id))
    assert r.status_code == 409 and r.json()["error"]["code"] == "TRAINING_IN_PROGRESS"
    r = client.delete(exp_url(world.project, exp["id"]))
    assert r.status_code == 409 and r.json()["error"]["code"] == "TRAINING_IN_PROGRESS"
    assert client.post(run_url(world.project, run_id, "resume")).status_code == 409

    wait_for(lambda: _kinds(run_id).count("epoch_end") >= 2)
    r = client.post(run_url(world.project, run_id, "stop"))
    assert r.status_code == 200
    stopped = _wait_status(client, world.project, run_id, {"cancelled", "completed"})
    assert stopped["status"] == "cancelled"
    first = stopped["epochs_completed"]
    assert 2 <= first < 400 and stopped["last_checkpoint_id"]
    assert _kinds(run_id)[-1] == "status"  # {"status": "cancelled"}

    r = client.post(run_url(world.project, run_id, "resume"))
    assert r.status_code == 200, r.content
    assert r.json()["data"]["status"] == "pending" and r.json()["data"]["resumes"] == 1
    task_id = Run.objects.get(pk=run_id).task_id

    def resumed_event():
        rows = TaskEvent.objects.filter(task_id=task_id, kind="status").order_by("seq")
        return [e.data for e in rows if e.data.get("resumed_from_epoch") is not None]

    event = wait_for(resumed_event)[0]
    assert event["resumed_from_epoch"] >= first and event["status"] == "running"
    wait_for(lambda: Run.objects.get(pk=run_id).epochs_completed > first)
    client.post(run_url(world.project, run_id, "stop"))
    again = _wait_status(client, world.project, run_id, {"cancelled", "completed"})
    assert again["epochs_completed"] > first
    epochs = [m["epoch"] for m in again["metrics"]["epochs"]]
    assert epochs == list(range(1, again["epochs_completed"] + 1))  # continued, not restarted

    # Deleting the run removes its task, events, model and checkpoints.
    run = Run.objects.get(pk=run_id)
    ids = (run.task_id, run.cluster_id, run.best_checkpoint_id, run.last_checkpoint_id)
    assert client.delete(run_url(world.project, run_id)).status_code == 200
    assert not Run.objects.filter(pk=run_id).exists()
    assert not Task.objects.filter(pk=ids[0]).exists()
    assert not TaskEvent.objects.filter(task_id=ids[0]).exists()
    assert not Cluster.objects.filter(pk=ids[1]).exists()
    assert not Checkpoint.objects.filter(pk__in=ids[2:]).exists()
    assert client.get(run_url(world.project, run_id)).status_code == 404


def test_a_stopped_pending_run_and_a_second_run(world, small_digits, stub_broker):
    # No worker: the run stays pending until stopped, which ends it at once.
    train, _ = small_digits
    client = client_for(world.owner)
    exp = create_experiment(client, world.project, dataset_id=str(train.pk), epochs=2, **FAST)
    run_id = start_run(client, world.project, exp["id"])["run_id"]
    r = client.post(run_url(world.project, run_id, "stop"))
    assert r.json()["data"]["status"] == "cancelled"
    second = start_run(client, world.project, exp["id"])
    assert second["number"] == 2 and second["status"] == "pending"
    # A completed or pending run is not resumable.
    r = client.post(run_url(world.project, second["run_id"], "resume"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "TRAINING_IN_PROGRESS"


def test_a_failing_run_ends_failed_with_the_reason_and_keeps_its_checkpoint(
    world, small_digits, stub_worker, monkeypatch
):
    import ml.training

    real = ml.training._train_epoch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated device failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(ml.training, "_train_epoch", flaky)
    train, _ = small_digits
    client = client_for(world.owner)
    exp = create_experiment(client, world.project, dataset_id=str(train.pk), epochs=4, **FAST)
    run_id = start_run(client, world.project, exp["id"])["run_id"]
    failed = _wait_status(client, world.project, run_id, {"failed", "completed"})
    assert failed["status"] == "failed"
    assert failed["error"] == {"type": "RuntimeError", "message": "simulated device failure"}
    assert failed["epochs_completed"] == 2
    last = Checkpoint.objects.get(pk=failed["last_checkpoint_id"])
    assert last.metadata["epoch"] == 2
    task_id = Run.objects.get(pk=run_id).task_id
    error = TaskEvent.objects.filter(task_id=task_id).order_by("seq").last()
    assert error.kind == "error" and "simulated" in error.data["message"]

    # Resumed, it continues from epoch 2 and completes.
    assert client.post(run_url(world.project, run_id, "resume")).status_code == 200
    done = _wait_status(client, world.project, run_id, {"completed", "failed"})
    assert done["status"] == "completed", done["error"]
    assert [m["epoch"] for m in done["metrics"]["epochs"]] == [1, 2, 3, 4]
    assert done["last_checkpoint_id"] == failed["last_checkpoint_id"]  # same checkpoint row
    assert Checkpoint.objects.get(pk=done["last_checkpoint_id"]).metadata["epoch"] == 4


def test_roles_on_runs(world, small_digits, stub_broker):
    train, _ = small_digits
    owner = client_for(world.owner)
    exp = create_experiment(owner, world.project, dataset_id=str(train.pk), epochs=2, **FAST)
    viewer, member = client_for(world.viewer), client_for(world.member)
    assert viewer.post(exp_url(world.project, exp["id"], "run")).status_code == 403
    assert member.post(exp_url(world.project, exp["id"], "run")).status_code == 403  # not theirs
    run_id = start_run(owner, world.project, exp["id"])["run_id"]
    assert viewer.get(run_url(world.project, run_id)).status_code == 200
    assert viewer.get(run_url(world.project, run_id, "metrics")).status_code == 200
    for client in (viewer, member):
        assert client.post(run_url(world.project, run_id, "stop")).status_code == 403
        assert client.delete(run_url(world.project, run_id)).status_code == 403
    assert Task.objects.get(pk=Run.objects.get(pk=run_id).task_id).state == "queued"


def test_pending_and_cancelled_runs_match_the_schema(world, small_digits, stub_broker):
    """A run not finished has no best metric, error or final metrics yet: null, which the schema
    allows (schemathesis found `best_metric: null` answered where the schema said object)."""
    from tests.core.test_schema_fuzz_regressions import _assert_matches_schema, _openapi

    train, _ = small_digits
    client = client_for(world.owner)
    openapi = _openapi(client)
    exp = create_experiment(client, world.project, dataset_id=str(train.pk), epochs=2, **FAST)
    started = client.post(exp_url(world.project, exp["id"], "run"), format="json")
    run = started.json()["data"]
    assert run["best_metric"] is None and run["error"] is None
    _assert_matches_schema(
        openapi, "/api/training/{project_id}/experiments/{exp_id}/run", "post", started
    )
    detail = client.get(run_url(world.project, run["run_id"]))
    assert detail.json()["data"]["final_metrics"] is None
    _assert_matches_schema(openapi, "/api/training/{project_id}/runs/{run_id}", "get", detail)
    stopped = client.post(run_url(world.project, run["run_id"], "stop"))
    assert stopped.json()["data"]["status"] == "cancelled"
    _assert_matches_schema(
        openapi, "/api/training/{project_id}/runs/{run_id}/stop", "post", stopped
    )
