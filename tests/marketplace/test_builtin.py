"""The built-in compute: learnuplet and preduplet jobs on the job engine, on the digits data.

The full flow runs a real Dramatiq worker (stub broker) and talks to the gateway only; the other
tests run the job runner in-process to pin down single behaviours."""

import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest

from apps.clusters.models import Checkpoint
from apps.datasets.idx import write_idx
from apps.datasets.imports import dataset_import_mnist
from apps.datasets.selectors import dataset_arrays
from apps.marketplace import dispatch
from apps.marketplace.models import Algo, ComputePush, Learnuplet, Preduplet, UpletStatus
from apps.tasks.models import Task
from apps.tasks.runner import task_run
from tests.clusters.helpers import make_cluster
from tests.conftest import client_for
from tests.marketplace.conftest import ZERO_UUID
from tests.tasks.conftest import wait_for


def make_shards(world, source, count: int, size: int | None = None) -> list[str]:
    """Cut a digits dataset into `count` MNIST datasets of project A; returns their ids."""
    x, y = dataset_arrays(source)
    images = np.round(np.asarray(x).reshape(len(x), 8, 8) * 255).astype(np.uint8)
    labels = np.asarray(y).astype(np.uint8)
    size = size or len(images) // count
    ids = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(count):
            part = slice(i * size, (i + 1) * size)
            images_path, labels_path = Path(tmp) / f"i{i}", Path(tmp) / f"l{i}"
            write_idx(images_path, images[part])
            write_idx(labels_path, labels[part])
            dataset = dataset_import_mnist(
                project=world.project,
                actor=world.owner,
                name=f"{source.name}-shard-{i}",
                images=images_path,
                labels=labels_path,
            )
            ids.append(str(dataset.pk))
    return ids


def _all_finished(algo_uuid, count):
    """The uplets once each is done or failed AND its task finished: the job's body writes the
    uplet's status, the engine finishes the task after the body returns."""
    uplets = list(
        Learnuplet.objects.filter(algo__uuid=algo_uuid).select_related("task").order_by("rank")
    )
    if len(uplets) == count and all(
        u.status in ("done", "failed") and u.task is not None and u.task.is_terminal for u in uplets
    ):
        return uplets
    return None


def _assert_chain(uplets, algo_uuid):
    """Rank 0 starts from the algo; every later rank from the best done model before it."""
    assert str(uplets[0].model_start) == algo_uuid
    for i in range(1, len(uplets)):
        earlier = [u for u in uplets[:i] if u.status == "done"]
        best = max(earlier, key=lambda u: (u.perf, u.rank))
        assert uplets[i].model_start == best.model_end, f"rank {i}"


@pytest.mark.django_db(transaction=True)
def test_full_flow_problem_data_algo_training_in_rank_order_and_a_prediction(
    world, digits, stub_worker, owner_orch, settings
):
    settings.MARKETPLACE_TRAIN = {"epochs": 8}
    train_set, test_set = digits
    shards = make_shards(world, train_set, 4)
    test = str(test_set.pk)
    cluster = make_cluster(world.project, world.owner)
    algo = str(cluster.pk)

    problem = owner_orch.problem(test=[test], size=1)
    assert owner_orch.data([*shards[:3], test], [problem])["new_learnuplets"] == 0
    created = owner_orch.algo(problem, uuid_=algo, name="digits-mlp")
    assert created["new_learnuplets"] == 3

    uplets = wait_for(lambda: _all_finished(algo, 3), timeout=120)
    assert [u.status for u in uplets] == ["done"] * 3, [t.error for t in Task.objects.all()]
    tasks = [u.task for u in uplets]
    assert all(t.kind == "learnuplet" and t.state == "finished" for t in tasks)
    # Trained in rank order, each by its own job, claimed by the built-in compute.
    assert [t.started_at for t in tasks] == sorted(t.started_at for t in tasks)
    assert (
        tasks[0].finished_at <= tasks[1].started_at <= tasks[1].finished_at <= tasks[2].started_at
    )
    assert [str(u.worker) for u in uplets] == [str(t.pk) for t in tasks]
    assert all(u.claimed_by is None for u in uplets)
    _assert_chain(uplets, algo)
    assert max(u.perf for u in uplets) >= 0.85, [u.perf for u in uplets]
    # Every model is a checkpoint of the algo's cluster.
    for u in uplets:
        checkpoint = Checkpoint.objects.get(pk=u.model_end)
        assert checkpoint.cluster_id == cluster.pk and checkpoint.project_id == world.project.pk
        assert set(u.test_perf) == {test} and set(u.train_perf) == set(u.train_data)

    # New data: one more rank, trained from the best model so far.
    best = max(uplets, key=lambda u: (u.perf, u.rank))
    assert owner_orch.data([shards[3]], [problem])["new_learnuplets"] == 1
    uplets = wait_for(lambda: _all_finished(algo, 4), timeout=120)
    assert uplets[3].status == "done" and uplets[3].model_start == best.model_end
    _assert_chain(uplets, algo)

    # A prediction served from the problem's best model.
    best = max(uplets, key=lambda u: (u.perf, u.rank))
    r = owner_orch.post("prediction", {"data": [test], "problem": problem})
    assert r.status_code == 201 and r.json() == {"new_preduplets": 1}
    pred = wait_for(
        lambda: Preduplet.objects.filter(status__in=["done", "failed"]).first(), timeout=60
    )
    assert pred.status == "done", pred.task.error
    assert pred.model == best.model_end
    doc = owner_orch.get(f"preduplet/{pred.uuid}").json()
    assert doc["prediction_storage_uuid"] == str(pred.task_id)
    client = client_for(world.owner)
    result = client.get(f"/api/projects/{world.project.pk}/results/{pred.task_id}").json()["data"]
    assert result["num_samples"] == test_set.num_samples
    r = client.post(
        f"/api/projects/{world.project.pk}/results/{pred.task_id}/check",
        {"dataset_id": test},
        format="json",
    )
    assert r.status_code == 200 and r.json()["data"]["accuracy"] >= 85.0


# --- single behaviours, with the runner in-process -----------------------------------------------


@pytest.fixture
def inline_runner(settings):
    # The runner runs inside the test's transaction, which a heartbeat thread cannot see.
    settings.TASK_HEARTBEAT_INTERVAL_S = 3600
    settings.MARKETPLACE_TRAIN = {"epochs": 2}


@pytest.mark.django_db
def test_an_architecture_algo_gets_its_cluster_and_is_trained(
    world, digits, owner_orch, inline_runner
):
    train_set, test_set = digits
    [shard] = make_shards(world, train_set, 1, size=200)
    problem = owner_orch.problem(test=[str(test_set.pk)], size=1)
    owner_orch.data([shard, str(test_set.pk)], [problem])
    created = owner_orch.algo(problem, name="mlp")
    algo = Algo.objects.get(uuid=created["new_algo"]["uuid"])
    assert algo.architecture == "mlp" and algo.cluster.source == "mlp"
    uplet = Learnuplet.objects.get(algo=algo)
    task_run(str(uplet.task_id))
    uplet.refresh_from_db()
    assert uplet.status == "done" and 0.0 <= uplet.perf <= 1.0, uplet.task.error
    assert Checkpoint.objects.filter(pk=uplet.model_end, cluster=algo.cluster).exists()


@pytest.mark.django_db
def test_the_builtin_compute_and_an_http_worker_race_fairly(
    world, digits, owner_orch, compute_orch, inline_runner
):
    train_set, test_set = digits
    shards = make_shards(world, train_set, 2, size=100)
    problem = owner_orch.problem(test=[str(test_set.pk)], size=1)
    owner_orch.data([*shards, str(test_set.pk)], [problem])
    algo = str(make_cluster(world.project, world.owner).pk)
    owner_orch.algo(problem, uuid_=algo)
    uplet = Learnuplet.objects.get(algo__uuid=algo, rank=0)
    assert uplet.task.state == "queued"  # dispatched, not run yet

    # The HTTP worker is faster: the job finds the uplet taken and does nothing.
    assert (
        compute_orch.post(f"worker/learnuplet/{uplet.uuid}", {"worker": ZERO_UUID}).status_code
        == 200
    )
    task_run(str(uplet.task_id))
    uplet.refresh_from_db()
    assert uplet.task.state == "finished" and "skipped" in uplet.task.result
    assert uplet.status == "pending" and uplet.claimed_by.username == "compute-a"
    assert not Checkpoint.objects.filter(pk=uplet.model_end).exists()


@pytest.mark.django_db
def test_a_failing_job_marks_its_uplet_failed_and_the_chain_goes_on(
    world, digits, owner_orch, inline_runner
):
    train_set, test_set = digits
    shards = make_shards(world, train_set, 2, size=100)
    problem = owner_orch.problem(test=[str(test_set.pk)], size=1)
    owner_orch.data([*shards, str(test_set.pk)], [problem])
    # A cluster whose input (32 values) does not fit the 8x8 digits.
    from tests.clusters.helpers import template

    algo = str(make_cluster(world.project, world.owner, text=template(inputs=32)).pk)
    owner_orch.algo(problem, uuid_=algo)
    first = Learnuplet.objects.get(algo__uuid=algo, rank=0)
    task_run(str(first.task_id))
    first.refresh_from_db()
    assert first.status == UpletStatus.FAILED and first.task.state == "failed"
    assert "32" in first.failure_reason, first.failure_reason  # why, as the job saw it
    second = Learnuplet.objects.get(algo__uuid=algo, rank=1)
    assert str(second.model_start) == algo and second.task is not None


@pytest.mark.django_db
def test_what_the_builtin_compute_leaves_to_http_workers(
    world, digits, owner_orch, settings, market
):
    """External algos or data never get a job; with MARKETPLACE_BUILTIN_COMPUTE off, nothing."""
    train_set, test_set = digits
    assert not Task.objects.exists()  # `market` is all external
    # An Orchard model on external data: no job either.
    algo = str(make_cluster(world.project, world.owner).pk)
    owner_orch.algo(market["problem"], uuid_=algo)
    assert not Task.objects.exists()

    settings.MARKETPLACE_BUILTIN_COMPUTE = False
    problem = owner_orch.problem(test=[str(test_set.pk)], size=1)
    owner_orch.data([str(train_set.pk), str(test_set.pk)], [problem])
    owner_orch.algo(problem, uuid_=str(make_cluster(world.project, world.owner).pk))
    assert not Task.objects.exists()
    settings.MARKETPLACE_BUILTIN_COMPUTE = True
    owner_orch.algo(problem, uuid_=str(make_cluster(world.project, world.owner).pk))
    assert Task.objects.filter(kind="learnuplet").count() == 1


def test_a_learnuplets_float32_inputs_are_used_as_loaded_not_copied():
    """The training set of a learnuplet (60 MB for 20,000 MNIST rows) is not copied at scale 1;
    a read-only (memory-mapped) array is copied so torch gets a writable one, and a scaled one is
    a new array, the loaded one left as it was."""
    from apps.clusters.training import scaled_rows as _scaled

    x = np.ones((3, 2, 2), dtype=np.float32)
    same = _scaled(x, 1.0)
    assert same.shape == (3, 4) and np.shares_memory(same, x)
    x.flags.writeable = False
    copied = _scaled(x, 1.0)
    assert copied.flags.writeable and not np.shares_memory(copied, x)
    halved = _scaled(x, 0.5)
    assert halved.shape == (3, 4) and np.all(halved == 0.5) and np.all(x == 1)


@pytest.mark.django_db
def test_a_learnuplet_trains_and_scores_on_the_stored_pixels_without_a_float32_copy(
    world, digits, owner_orch, inline_runner, monkeypatch
):
    """Two uint8 MNIST shards per learnuplet: training sees them joined as stored bytes (each
    batch converted by `fit`), and the per-file accuracies read each file as stored too."""
    import ml.training
    from ml.data import StoredInputs

    seen = {"fit": [], "evaluate": []}

    def spy(name):
        real = getattr(ml.training, name)

        def wrapper(model, x, *args, **kwargs):
            seen[name].append(x)
            return real(model, x, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(ml.training, "fit", spy("fit"))
    monkeypatch.setattr(ml.training, "evaluate", spy("evaluate"))
    train_set, test_set = digits
    shards = make_shards(world, train_set, 2, size=150)
    problem = owner_orch.problem(test=[str(test_set.pk)], size=2)
    owner_orch.data([*shards, str(test_set.pk)], [problem])
    algo = str(make_cluster(world.project, world.owner).pk)
    owner_orch.algo(problem, uuid_=algo)
    uplet = Learnuplet.objects.get(algo__uuid=algo, rank=0)
    task_run(str(uplet.task_id))
    uplet.refresh_from_db()
    assert uplet.status == "done", uplet.task.error
    assert set(uplet.train_perf) == set(shards) and 0.3 <= uplet.perf <= 1.0

    [trained] = seen["fit"]
    assert isinstance(trained, StoredInputs) and trained.values.dtype == np.uint8
    assert trained.shape == (300, 64) and trained.factors == (float(np.float32(1 / 255)),)
    scored = seen["evaluate"]  # the two shards, then the test file
    assert [type(x) for x in scored] == [StoredInputs] * 3
    assert all(x.values.dtype == np.uint8 for x in scored)
    assert [len(x) for x in scored] == [150, 150, test_set.num_samples]


# --- deleted models and late data ----------------------------------------------------------------


def _train(uplet_uuid) -> Learnuplet:
    """Run a learnuplet's job in-process; the learnuplet, done."""
    uplet = Learnuplet.objects.get(uuid=uplet_uuid)
    assert uplet.task_id is not None, f"rank {uplet.rank} has no job"
    task_run(str(uplet.task_id))
    uplet.refresh_from_db()
    assert uplet.status == "done", uplet.task.error
    return uplet


def _delete_checkpoint(world, checkpoint_id) -> None:
    r = client_for(world.owner).delete(
        f"/api/projects/{world.project.pk}/checkpoints/{checkpoint_id}"
    )
    assert r.status_code == 204, r.content


@pytest.mark.django_db
def test_a_prediction_uses_the_best_model_left_and_none_left_is_400(
    world, digits, owner_orch, inline_runner
):
    train_set, test_set = digits
    shards = make_shards(world, train_set, 3, size=100)
    test = str(test_set.pk)
    problem = owner_orch.problem(test=[test], size=1)
    owner_orch.data([*shards[:2], test], [problem])
    algo = str(make_cluster(world.project, world.owner).pk)
    owner_orch.algo(problem, uuid_=algo)
    ranks = owner_orch.learnuplets(algo=algo)
    done = [_train(ranks[0]["uuid"]), _train(ranks[1]["uuid"])]
    best, other = sorted(done, key=lambda u: (u.perf, u.rank), reverse=True)

    _delete_checkpoint(world, best.model_end)
    r = owner_orch.post("prediction", {"data": test, "problem": problem})
    assert r.status_code == 201, r.content
    assert r.json()["model"] == str(other.model_end) and r.json()["status"] == "todo"
    assert Preduplet.objects.get(uuid=r.json()["uuid"]).task.kind == "preduplet"
    # A chain goes on from the best model left too, not from the deleted one.
    assert owner_orch.data([shards[2]], [problem])["new_learnuplets"] == 1
    assert owner_orch.learnuplets(algo=algo)[2]["model_start"] == str(other.model_end)

    _delete_checkpoint(world, other.model_end)
    r = owner_orch.post("prediction", {"data": test, "problem": problem})
    assert r.status_code == 400 and set(r.json()) == {"Error"}, r.content
    assert "no trained model is available" in r.json()["Error"]
    assert Preduplet.objects.count() == 1


@pytest.mark.django_db
def test_a_prediction_waiting_for_its_data_runs_when_they_arrive_or_fails_if_its_model_went(
    world, digits, owner_orch, inline_runner
):
    """Predictions asked before their data are registered: each gets its job when its data
    arrive (here registered for another problem of the project), unless its model was deleted
    meanwhile: then it is failed, with the reason, instead of waiting forever."""
    train_set, test_set = digits
    shard, later, last = make_shards(world, train_set, 3, size=100)
    test = str(test_set.pk)
    problem = owner_orch.problem(test=[test], size=1)
    owner_orch.data([shard, test], [problem])
    algo = str(make_cluster(world.project, world.owner).pk)
    owner_orch.algo(problem, uuid_=algo)
    model = _train(owner_orch.learnuplets(algo=algo)[0]["uuid"]).model_end
    asked = {}
    for data in (later, last):
        r = owner_orch.post("prediction", {"data": data, "problem": problem})
        assert r.status_code == 201 and r.json()["model"] == str(model), r.content
        asked[data] = r.json()["uuid"]
    assert not Task.objects.filter(kind="preduplet").exists()  # their data are not registered

    other = owner_orch.problem(test=[test], size=1)
    r = owner_orch.post("data", {"uuid": later, "problems": other})
    assert r.status_code == 201, r.content
    ready = Preduplet.objects.get(uuid=asked[later])
    assert ready.task.kind == "preduplet"
    task_run(str(ready.task_id))
    doc = owner_orch.get(f"preduplet/{asked[later]}").json()
    assert doc["status"] == "done", Preduplet.objects.get(uuid=asked[later]).task.error
    assert Preduplet.objects.get(uuid=asked[last]).status == "todo"

    _delete_checkpoint(world, model)
    r = owner_orch.post("data", {"uuid": last, "problems": other})
    assert r.status_code == 201, r.content
    doc = owner_orch.get(f"preduplet/{asked[last]}").json()
    assert doc["status"] == "failed" and doc["timestamp_done"] is not None
    gone = Preduplet.objects.get(uuid=asked[last])
    assert gone.task is None and "was deleted" in gone.failure_reason
    r = client_for(world.owner).get(f"/api/marketplace/{world.project.pk}/preduplets/{gone.uuid}")
    assert r.json()["data"]["failure_reason"] == gone.failure_reason


@pytest.mark.django_db
def test_a_learnuplet_whose_test_data_arrive_last_gets_its_job_then(
    world, digits, owner_orch, inline_runner
):
    train_set, test_set = digits
    shards = make_shards(world, train_set, 2, size=100)
    test = str(test_set.pk)
    problem = owner_orch.problem(test=[test], size=1)
    r = owner_orch.post("data", {"uuid": shards, "problems": problem})
    assert r.status_code == 201 and r.json()["new_learnuplets"] == 0, r.content
    created = owner_orch.post(
        "algo", {"uuid": str(uuid.uuid4()), "name": "mlp", "problem": problem}
    )
    assert created.status_code == 201, created.content
    algo = created.json()["new_algo"]["uuid"]
    first = owner_orch.learnuplets(algo=algo)[0]
    assert first["status"] == "todo" and first["model_start"] == algo
    # Read now, before the test data exist: what a concurrent request would hold.
    stale = Learnuplet.objects.select_related("algo", "problem").get(uuid=first["uuid"])
    assert stale.task_id is None and not Task.objects.exists()

    r = owner_orch.post("data", {"uuid": test, "problems": problem})
    assert r.status_code == 201 and r.json()["new_learnuplets"] == 0, r.content
    uplet = Learnuplet.objects.get(uuid=first["uuid"])
    assert uplet.task.kind == "learnuplet" and uplet.task.state == "queued"
    # Once: a dispatch that read the uplet before this one committed creates no second job,
    # nor does registering more data, and rank 1 waits for rank 0.
    dispatch._builtin_learnuplet(stale)
    other = owner_orch.problem(test=[str(uuid.uuid4())], size=1)
    r = owner_orch.post("data", {"uuid": str(uuid.uuid4()), "problems": other})
    assert r.status_code == 201, r.content
    assert Task.objects.filter(kind="learnuplet").count() == 1
    assert Algo.objects.get(uuid=algo).cluster is not None
    _train(first["uuid"])
    second = owner_orch.learnuplets(algo=algo)[1]
    assert second["model_start"] == first["model_end"]
    assert Learnuplet.objects.get(uuid=second["uuid"]).task is not None


@pytest.mark.django_db
def test_removing_the_compute_api_gives_its_waiting_uplets_to_the_builtin_compute(
    world, digits, owner_orch
):
    train_set, test_set = digits
    client = client_for(world.owner)
    url = f"/api/marketplace/{world.project.pk}/compute"
    r = client.put(url, {"url": "https://compute.example.org"}, format="json")
    assert r.status_code == 200, r.content
    problem = owner_orch.problem(test=[str(test_set.pk)], size=1)
    owner_orch.data([str(train_set.pk), str(test_set.pk)], [problem])
    algo = str(make_cluster(world.project, world.owner).pk)
    owner_orch.algo(problem, uuid_=algo)
    [uplet] = Learnuplet.objects.filter(algo__uuid=algo)
    assert uplet.task is None and ComputePush.objects.filter(uplet_uuid=uplet.uuid).exists()

    assert client.delete(url).status_code == 200
    uplet.refresh_from_db()
    assert uplet.task.kind == "learnuplet" and uplet.task.state == "queued"
    assert Task.objects.filter(kind="learnuplet").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_learnuplet_whose_test_data_were_still_uploading_gets_its_job_when_they_are_ready(
    world, digits, owner_orch, inline_runner
):
    """Data registered while their dataset still uploads (the Hanami SDK's two-step upload)
    are no Orchard dataset the built-in compute can read yet: the uplet waited todo with no job
    for good, as nothing dispatched it when the upload was finalized."""
    from apps.datasets import uploads
    from apps.datasets.idx import idx_bytes

    train_set, test_set = digits
    shards = make_shards(world, train_set, 2, size=100)
    x, y = dataset_arrays(test_set)
    images = idx_bytes(np.round(np.asarray(x).reshape(len(x), 8, 8) * 255).astype(np.uint8))
    labels = idx_bytes(np.asarray(y).astype(np.uint8))
    pending, sessions = uploads.dataset_upload_begin(
        project=world.project,
        actor=world.owner,
        name="test-uploading",
        kind="mnist",
        sizes={"images": len(images), "labels": len(labels)},
    )
    test = str(pending.pk)
    problem = owner_orch.problem(test=[test], size=1)
    assert (
        owner_orch.post("data", {"uuid": [*shards, test], "problems": problem}).status_code == 201
    )
    created = owner_orch.post(
        "algo", {"uuid": str(uuid.uuid4()), "name": "mlp", "problem": problem}
    )
    assert created.status_code == 201, created.content
    algo = created.json()["new_algo"]["uuid"]
    first = owner_orch.learnuplets(algo=algo)[0]
    assert first["status"] == "todo" and Learnuplet.objects.get(uuid=first["uuid"]).task is None

    for role, payload in (("images", images), ("labels", labels)):
        uploads.upload_session_write(session=sessions[role], position=0, data=payload)
    uploads.dataset_finalize_upload(dataset=pending)
    uplet = Learnuplet.objects.get(uuid=first["uuid"])
    assert uplet.task is not None and uplet.task.kind == "learnuplet"
    assert Task.objects.filter(kind="learnuplet").count() == 1
