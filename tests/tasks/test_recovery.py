"""Losing no work (#14): lost messages, worker restarts, dropped connections, SIGTERM, hung
handlers and duplicate epoch events, through the real worker code paths."""

import logging
import os
import signal
import threading
import time
from datetime import timedelta

import dramatiq
import pytest
from django.core.management import call_command
from django.db import InterfaceError, connection
from django.utils import timezone
from dramatiq.brokers.stub import StubBroker

from apps.clusters.services import cluster_task_create
from apps.tasks import context, registry, runner, services
from apps.tasks.models import Task, TaskEvent
from tests.clusters.helpers import make_cluster
from tests.conftest import client_for
from tests.tasks.conftest import wait_for, wait_state

transactional = pytest.mark.django_db(transaction=True)


def _noop(ctx):
    ctx.progress(1.0)
    return {"ran": ctx.attempt}


@pytest.fixture
def kinds():
    registry.register("rec-noop", _noop)
    registry.register("rec-noop-c", _noop)


@pytest.fixture
def worker(stub_broker):
    """A real Dramatiq worker with two threads on the test's broker."""
    w = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=2)
    w.start()
    yield w
    w.stop()


def _create(world, kind="rec-noop", **kw):
    create = cluster_task_create if "cluster" in kw else services.task_create
    return create(project=world.project, actor=world.owner, kind=kind, name=kind, **kw)


def _lose_messages(broker):
    """The broker forgets every message (a restarted in-memory broker, a flushed Redis)."""
    broker.flush_all()


# --- (a) queued tasks whose message is gone --------------------------------------------------


@transactional
def test_sweeper_resends_a_lost_message_that_blocked_its_cluster(world, kinds, stub_broker):
    cluster = make_cluster(world.project, world.owner)
    first = _create(world, "rec-noop-c", cluster=cluster)
    _lose_messages(stub_broker)
    second = _create(world, "rec-noop-c", cluster=cluster)
    w = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=2)
    w.start()
    try:
        # The second task waits for the first, whose message is gone: only the first is due
        # once its message is older than TASK_QUEUED_RESEND_S.
        assert runner.task_sweep()["resent"] == []  # not older than the threshold yet
        Task.objects.filter(pk=first.pk).update(sent_at=timezone.now() - timedelta(minutes=2))
        assert runner.task_sweep()["resent"] == [str(first.pk)]
        rows = [wait_state(first.pk), wait_state(second.pk)]
    finally:
        w.stop()
    assert [r.state for r in rows] == ["finished", "finished"], [r.error for r in rows]
    assert rows[0].finished_at <= rows[1].started_at
    assert [r.attempts for r in rows] == [1, 1]


# --- (b) + (c) the embedded worker: recovery at start, then a sweeper on an interval ---------


@transactional
def test_inprocess_worker_recovers_at_start(world, kinds, stub_broker, settings):
    from apps.tasks.embedded import start_inprocess_worker, stop_inprocess_worker

    settings.TASK_SWEEP_INTERVAL_S = 3600  # only the recovery at start can send anything
    queued = _create(world)
    crashed = _create(world)
    old = timezone.now() - timedelta(minutes=10)
    Task.objects.filter(pk=crashed.pk).update(state="active", attempts=1, heartbeat_at=old)
    _lose_messages(stub_broker)  # the previous process's in-memory broker is gone

    start_inprocess_worker()
    try:
        rows = [wait_state(queued.pk), wait_state(crashed.pk)]
    finally:
        stop_inprocess_worker()
    assert [r.state for r in rows] == ["finished", "finished"], [r.error for r in rows]
    assert [r.attempts for r in rows] == [1, 2]


@transactional
def test_inprocess_worker_sweeps_on_an_interval(world, kinds, stub_broker, settings, monkeypatch):
    from apps.tasks.embedded import start_inprocess_worker, stop_inprocess_worker

    settings.TASK_SWEEP_INTERVAL_S = 0.05
    sweeps = []
    original = runner.task_sweep

    def counted(**kw):
        result = original(**kw)
        sweeps.append(kw)
        return result

    monkeypatch.setattr(runner, "task_sweep", counted)
    start_inprocess_worker()
    try:
        wait_for(lambda: sweeps)  # the recovery pass ran
        task = Task.objects.create(
            project=world.project, kind="rec-noop", name="orphan", queued_at=timezone.now()
        )  # a queued row whose message was never sent
        done = wait_state(task.pk)
    finally:
        stop_inprocess_worker()
    assert done.state == "finished"
    assert sweeps[0] == {"resend_after_s": 0} and {} in sweeps[1:]


# --- (d) a submit while the broker is unreachable ----------------------------------------------


@transactional
def test_submit_with_broker_down_answers_201_and_the_sweeper_sends_it(
    world, digits, stub_broker, worker, monkeypatch
):
    train_set, _ = digits
    cluster = make_cluster(world.project, world.member)

    def unreachable(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(stub_broker, "enqueue", unreachable)
    r = client_for(world.member).post(
        f"/api/projects/{world.project.pk}/tasks",
        {
            "name": "fit",
            "kind": "train",
            "cluster_id": str(cluster.pk),
            "dataset_id": str(train_set.pk),
            "params": {"epochs": 1},
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    row = Task.objects.get(pk=r.json()["data"]["id"])
    assert row.state == "queued" and row.sent_at is None  # due at the next sweep

    monkeypatch.undo()
    assert runner.task_sweep()["resent"] == [str(row.pk)]
    done = wait_state(row.pk)
    assert done.state == "finished", (done.error, done.traceback)


# --- (e) the heartbeat thread reconnects -----------------------------------------------------


@transactional
def test_heartbeat_reconnects_after_its_connection_drops(world, stub_broker, worker, settings):
    settings.TASK_HEARTBEAT_INTERVAL_S = 0.05
    gate = threading.Event()

    def hold(ctx):
        while not gate.wait(0.02):
            ctx.progress(0.5)
            if ctx.should_stop():
                break

    registry.register("rec-hold", hold)
    original = context.TaskContext._beat
    drops = []

    def flaky(self):
        if not drops:
            drops.append(True)
            connection.ensure_connection()
            connection.connection.close()  # the database drops this thread's connection
            raise InterfaceError("connection already closed")
        return original(self)

    context.TaskContext._beat = flaky
    try:
        task = _create(world, "rec-hold")
        active = wait_state(task.pk, states=("active",))
        wait_for(lambda: drops)
        wait_for(lambda: Task.objects.get(pk=task.pk).heartbeat_at > active.heartbeat_at)
    finally:
        gate.set()
        context.TaskContext._beat = original
    assert wait_state(task.pk).state == "finished"


@transactional
def test_a_task_deleted_while_it_runs_ends_quietly_and_leaves_no_files(
    world, stub_broker, worker, caplog
):
    """Deleting a cluster (or its project) while its task runs deletes the task's rows with it:
    the handler's next event then broke a foreign key, the runner logged a failed task (ERROR,
    with a traceback) and the task's resume directory stayed behind for good."""
    import torch

    deleted = threading.Event()

    def hold(ctx):
        ctx.save_resume({"w": torch.zeros(1)}, {"epoch": 1})
        deleted.wait(30)
        ctx.record("epoch", {"epoch": 2})

    registry.register("rec-deleted", hold)
    cluster = make_cluster(world.project, world.owner)
    task = _create(world, "rec-deleted", cluster=cluster)
    wait_state(task.pk, states=("active",))
    directory = services.resume_dir(task)
    wait_for(lambda: (directory / "resume.safetensors").exists())
    url = f"/api/projects/{world.project.pk}/clusters/{cluster.pk}"
    assert client_for(world.owner).delete(url).status_code == 204
    assert not Task.objects.filter(pk=task.pk).exists()
    deleted.set()
    wait_for(lambda: not directory.exists(), timeout=30)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


# --- (b) + (f) orchard_worker: the sweeper; SIGTERM stops at the next step and re-queues -------


def _run_orchard_worker_until(predicate, timeout: float = 120) -> bool:
    """Run `manage.py orchard_worker` in this (the main) thread until `predicate` holds, then
    SIGTERM it as a supervisor would; returns whether the predicate held."""
    held = []

    def supervisor():
        try:
            held.append(bool(wait_for(predicate, timeout)))
        finally:
            connection.close()
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=supervisor)
    thread.start()
    call_command("orchard_worker", "--queue", "cpu", "--reap-every", "0.1")  # ends on SIGTERM
    thread.join()
    return bool(held)


@transactional
def test_orchard_worker_sweeper_resends_a_lost_message(world, kinds, stub_broker):
    task = _create(world)
    _lose_messages(stub_broker)
    Task.objects.filter(pk=task.pk).update(sent_at=timezone.now() - timedelta(minutes=5))
    assert _run_orchard_worker_until(
        lambda: Task.objects.filter(pk=task.pk, state="finished").exists(), timeout=30
    )


@pytest.mark.slow
@transactional
def test_sigterm_requeues_the_running_task_with_its_checkpoint(world, digits, stub_broker):
    train_set, _ = digits
    cluster = make_cluster(world.project, world.owner)
    epochs = 40
    task = cluster_task_create(
        project=world.project,
        actor=world.owner,
        kind="train",
        name="fit",
        cluster=cluster,
        dataset=train_set,
        params={"epochs": epochs, "batch_size": 8},
    )
    assert _run_orchard_worker_until(
        lambda: TaskEvent.objects.filter(task=task, kind="epoch").count() >= 2
    )

    row = Task.objects.get(pk=task.pk)
    assert (row.state, row.attempts, row.error, row.stop_requested) == ("queued", 0, "", False)
    assert services.resume_dir(row).joinpath("resume.safetensors").exists()

    if isinstance(stub_broker, StubBroker):
        # The stub broker drops what a stopping worker had prefetched (the re-sent message);
        # Redis puts it back. The embedded worker's start-up recovery re-sends it.
        runner.task_sweep(resend_after_s=0)
    w = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=1)
    w.start()
    try:
        done = wait_state(task.pk, timeout=180)
    finally:
        w.stop()
    assert done.state == "finished", (done.error, done.traceback)
    assert done.attempts == 1
    assert done.result["resumed_from_epoch"] >= 2
    assert done.result["epochs_completed"] == epochs
    seen = list(
        TaskEvent.objects.filter(task=task, kind="epoch").values_list("data__epoch", flat=True)
    )
    assert seen == list(range(1, epochs + 1))


# --- (g) a handler that reports no progress is hung, even while its heartbeat beats ----------


@transactional
def test_silent_handler_is_requeued_then_failed(world, stub_broker, settings):
    settings.TASK_HEARTBEAT_INTERVAL_S = 0.05
    release = threading.Event()
    attempts = []

    def silent(ctx):
        attempts.append(ctx.attempt)
        ctx.progress(0.1)
        while not release.is_set():  # stuck, never reports again
            time.sleep(0.01)

    registry.register(
        "rec-silent",
        silent,
        max_attempts=2,
        progress_stale_s=0.3,
    )
    # One slot: the second attempt can only run once the hung first one was interrupted.
    w = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=1)
    w.start()
    try:
        task = _create(world, "rec-silent")
        done = wait_state(task.pk)
    finally:
        release.set()
        w.stop()
    assert done.state == "failed"
    assert "No progress reported" in done.error and "TASK_PROGRESS_STALE_S" in done.error
    assert attempts == [1, 2] and done.attempts == 2


# --- torch threads -----------------------------------------------------------------------------


def test_torch_threads_share_the_usable_cores(settings, monkeypatch):
    from apps.tasks import threads

    monkeypatch.delenv("TORCH_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    settings.TORCH_THREADS = None
    settings.OMP_NUM_THREADS = None
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert threads.torch_threads(3) == 2 and threads.torch_threads(16) == 1
    assert threads.torch_threads(2, default=1) == 1  # the embedded worker
    settings.TORCH_THREADS = 4
    assert threads.torch_threads(3) == 4 and threads.torch_threads(2, default=1) == 4


def test_a_worker_keeps_the_openmp_thread_count_it_was_given(settings, monkeypatch):
    """Team mode started with OMP_NUM_THREADS=1 (the deployed bench) still ran torch on every
    core per worker process; without TORCH_THREADS, OMP_NUM_THREADS now decides."""
    from apps.tasks import threads

    monkeypatch.delenv("TORCH_THREADS", raising=False)
    settings.TORCH_THREADS = None
    settings.OMP_NUM_THREADS = 1
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert threads.torch_threads(1) == 1 and threads.torch_threads(2, default=1) == 1
    settings.OMP_NUM_THREADS = 3
    assert threads.torch_threads(1) == 3
    settings.TORCH_THREADS = 2  # TORCH_THREADS still wins
    assert threads.torch_threads(1) == 2


# --- (h) an epoch redone after a resume is stored and published once -------------------------


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing in the runner catches it."""


@pytest.mark.django_db
def test_epoch_redone_after_resume_is_published_once(world, digits, monkeypatch, settings):
    settings.TASK_HEARTBEAT_INTERVAL_S = 3600  # runs inside the test's transaction
    train_set, _ = digits
    cluster = make_cluster(world.project, world.owner)
    task = cluster_task_create(
        project=world.project,
        actor=world.owner,
        kind="train",
        name="fit",
        cluster=cluster,
        dataset=train_set,
        params={"epochs": 5},
    )
    published = []
    monkeypatch.setattr(context, "publish", lambda group, event: published.append(event))
    original = context.TaskContext.save_resume

    def die_before_saving_epoch_3(self, state, metadata):
        if metadata["epoch"] == 3 and self.attempt == 1:
            raise WorkerKilled()  # epoch 3 was recorded, its checkpoint not written
        original(self, state, metadata)

    monkeypatch.setattr(context.TaskContext, "save_resume", die_before_saving_epoch_3)
    with pytest.raises(WorkerKilled):
        runner.task_run(str(task.pk))
    Task.objects.filter(pk=task.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert runner.task_requeue_stale(older_than_s=60) == [str(task.pk)]
    runner.task_run(str(task.pk))

    task.refresh_from_db()
    assert task.state == "finished" and task.result["resumed_from_epoch"] == 2
    stored = list(
        TaskEvent.objects.filter(task=task, kind="epoch").values_list("data__epoch", flat=True)
    )
    assert stored == [1, 2, 3, 4, 5]
    assert [e["epoch"] for e in published if e.get("type") == "epoch"] == [1, 2, 3, 4, 5]


@pytest.mark.django_db
def test_a_resume_from_inside_the_first_epoch_is_recorded(world, digits, monkeypatch, settings):
    """A worker stopped inside the first epoch keeps a resume point at epoch 0: the next attempt
    still records that it resumed (as it did before training moved onto cluster_train)."""
    from apps.clusters import handlers
    from apps.clusters.runtime import cluster_load_model
    from apps.clusters.training import ResumePoint

    settings.TASK_HEARTBEAT_INTERVAL_S = 3600  # runs inside the test's transaction
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
    state = cluster_load_model(cluster).state_dict()
    monkeypatch.setattr(handlers, "_resume_point", lambda ctx: ResumePoint(state, None, 0))
    runner.task_run(str(task.pk))
    task.refresh_from_db()
    assert task.state == "finished", task.error
    resumed = TaskEvent.objects.filter(task=task, kind="resumed").values_list("data", flat=True)
    assert list(resumed) == [{"epoch": 0, "attempt": 1}]
