"""The task runner service without a broker: resume after a lost worker, the reaper, limits."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.clusters.services import cluster_task_create
from apps.tasks import context, registry, runner, services
from apps.tasks.models import Task, TaskEvent, target_of
from tests.clusters.helpers import make_cluster

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_heartbeat_thread(settings):
    # These tests run the runner inside the test's transaction, which a heartbeat thread (its own
    # connection) cannot see; heartbeats are covered by the worker tests.
    settings.TASK_HEARTBEAT_INTERVAL_S = 3600


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing in the runner catches it."""


def _train_task(world, dataset, **params):
    cluster = make_cluster(world.project, world.owner)
    return cluster_task_create(
        project=world.project,
        actor=world.owner,
        kind="train",
        name="fit",
        cluster=cluster,
        dataset=dataset,
        params=params,
    )


def test_lost_worker_resumes_from_last_checkpoint(world, digits, monkeypatch):
    train_set, _ = digits
    task = _train_task(world, train_set, epochs=5)
    original = context.TaskContext.save_resume
    crashed = []

    def save_then_die(self, state, metadata):
        original(self, state, metadata)
        if metadata["epoch"] == 2 and not crashed:
            crashed.append(True)
            raise WorkerKilled()

    monkeypatch.setattr(context.TaskContext, "save_resume", save_then_die)
    with pytest.raises(WorkerKilled):
        runner.task_run(str(task.pk))
    task.refresh_from_db()
    assert task.state == "active" and task.attempts == 1

    # Fresh heartbeat: not stale yet.
    assert runner.task_requeue_stale(older_than_s=60) == []
    Task.objects.filter(pk=task.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert runner.task_requeue_stale(older_than_s=60) == [str(task.pk)]
    task.refresh_from_db()
    assert task.state == "queued" and "lost" in task.error

    runner.task_run(str(task.pk))
    task.refresh_from_db()
    assert task.state == "finished", (task.error, task.traceback)
    assert task.attempts == 2 and task.error == ""
    assert task.result["resumed_from_epoch"] == 2
    assert task.result["epochs_completed"] == 5
    epochs = list(
        TaskEvent.objects.filter(task=task, kind="epoch").values_list("data__epoch", flat=True)
    )
    assert epochs == [1, 2, 3, 4, 5]  # each epoch ran exactly once
    assert TaskEvent.objects.filter(task=task, kind="resumed").count() == 1
    assert not services.resume_dir(task).joinpath("resume.safetensors").exists()


def test_reaper_fails_a_task_out_of_attempts(world):
    cluster = make_cluster(world.project, world.owner)
    old = timezone.now() - timedelta(hours=1)
    task = Task.objects.create(
        project=world.project,
        kind="train",
        name="t",
        **target_of(cluster),
        state="active",
        attempts=3,
        max_attempts=3,
        heartbeat_at=old,
    )
    assert runner.task_requeue_stale(older_than_s=10) == []
    task.refresh_from_db()
    assert task.state == "failed" and task.error == "Worker lost 3 times."
    assert task.finished_at is not None


def test_handler_error_fails_with_traceback(world):
    def broken(ctx):
        raise RuntimeError("boom")

    registry.register("broken", broken)
    task = services.task_create(project=world.project, actor=world.owner, kind="broken", name="b")
    runner.task_run(str(task.pk))
    task.refresh_from_db()
    assert task.state == "failed" and task.error == "RuntimeError: boom"
    assert "RuntimeError" in task.traceback


def test_handler_time_limit(world, monkeypatch):
    import time

    def slow(ctx):
        while not ctx.should_stop():
            time.sleep(0.01)

    registry.register("slow", slow, time_limit_s=1)
    task = services.task_create(project=world.project, actor=world.owner, kind="slow", name="s")
    runner.task_run(str(task.pk))
    task.refresh_from_db()
    assert task.state == "failed" and "Time limit of 1 s" in task.error


def test_unknown_kind_in_row_fails(world):
    task = Task.objects.create(project=world.project, kind="vanished", name="v")
    runner.task_run(str(task.pk))
    task.refresh_from_db()
    assert task.state == "failed" and "Unknown task kind" in task.error


@pytest.mark.parametrize("state", ["active", "finished"])
def test_a_message_for_a_task_that_left_queued_costs_one_read(
    world, state, monkeypatch, django_assert_num_queries
):
    """A finishing task wakes the next of its target with a second message even when that task's
    first message is still in the queue: under load every other message was such a duplicate,
    and each took the queue's lock in a transaction of its own before it was ignored."""
    cluster = make_cluster(world.project, world.owner)
    task = Task.objects.create(
        project=world.project, kind="train", name="t", **target_of(cluster), state=state
    )
    monkeypatch.setattr(runner, "_last_reap", float("inf"))  # no reaper pass in this count
    with django_assert_num_queries(1):
        runner.task_run(str(task.pk), token=None)
    task.refresh_from_db()
    assert task.state == state and task.attempts == 0


def test_a_claim_reads_the_row_once_and_returns_what_it_wrote(world):
    """Claiming a queued task (the start of every task): the unlocked state read, the row with
    its target's order in one read, the fair-share count and the update; the row is not read
    back, and what the runner gets is what the database holds."""
    cluster = make_cluster(world.project, world.owner)
    task = Task.objects.create(
        project=world.project, kind="train", name="t", **target_of(cluster), state="queued"
    )
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        claimed = runner._claim(str(task.pk))
    statements = [
        q["sql"]
        for q in queries.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "BEGIN", "SELECT pg_"))
    ]
    assert len(statements) == 4, statements
    stored = Task.objects.get(pk=task.pk)
    assert claimed is not None and claimed.state == stored.state == "active"
    assert claimed.attempts == stored.attempts == 1
    for field in ("heartbeat_at", "started_at", "updated_at"):
        assert getattr(claimed, field) == getattr(stored, field), field
    assert runner._claim(str(task.pk)) is None  # active now: the duplicate is ignored


def test_a_first_attempt_writes_each_epoch_event_once(world, digits):
    """Epoch events are keyed so that a resumed attempt updates the stored one; the first attempt
    cannot find one stored, so it inserts without the UPDATE that looks for it (one write per
    epoch, not two); a later attempt still updates in place."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    train_set, _ = digits
    task = _train_task(world, train_set, epochs=1)
    Task.objects.filter(pk=task.pk).update(attempts=1)
    task.refresh_from_db()
    ctx = context.TaskContext(task, registry.get("train"))
    with CaptureQueriesContext(connection) as first:
        ctx.record("epoch", {"epoch": 1, "loss": 0.5}, key="epoch")
        ctx.record("epoch", {"epoch": 2, "loss": 0.4}, key="epoch")
    writes = [q["sql"] for q in first.captured_queries if "taskevent" in q["sql"].lower()]
    assert [sql.split()[0] for sql in writes if not sql.startswith("SELECT")] == ["INSERT"] * 2

    Task.objects.filter(pk=task.pk).update(attempts=2)
    task.refresh_from_db()
    again = context.TaskContext(task, registry.get("train"))
    again.record("epoch", {"epoch": 2, "loss": 0.3}, key="epoch")  # redone after a resume
    stored = TaskEvent.objects.filter(task=task, kind="epoch").order_by("seq")
    assert [(e.data["epoch"], e.data["loss"]) for e in stored] == [(1, 0.5), (2, 0.3)]
