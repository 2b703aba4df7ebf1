"""Fixtures of the job engine tests: demo datasets, a cluster, and a stub-broker worker."""

import time

import dramatiq
import pytest
from django.db import OperationalError
from django.db.backends.signals import connection_created
from django.dispatch import receiver


@receiver(connection_created)
def _sqlite_read_uncommitted(sender, connection, **kwargs):
    """pytest-django's transactional SQLite database is in memory with a shared cache, where a
    reader blocks writers of other threads (SQLITE_LOCKED, not retried by busy_timeout). Reading
    uncommitted rows lifts that for the worker-thread tests; file databases are unaffected."""
    if connection.vendor == "sqlite" and "mode=memory" in str(connection.settings_dict["NAME"]):
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA read_uncommitted = 1")


@pytest.fixture
def digits(world):
    """("digits-train", "digits-test") in project A, owned by its admin."""
    from apps.datasets.demo import create_demo_datasets
    from apps.datasets.models import Dataset

    create_demo_datasets(project=world.project, actor=world.owner)
    qs = Dataset.objects.filter(project=world.project)
    return qs.get(name="digits-train"), qs.get(name="digits-test")


@pytest.fixture
def stub_broker():
    broker = dramatiq.get_broker()
    broker.flush_all()
    yield broker
    broker.flush_all()


@pytest.fixture
def stub_worker(stub_broker):
    """A real Dramatiq worker (one thread) on the stub broker, for transactional tests."""
    worker = dramatiq.Worker(stub_broker, worker_timeout=100, worker_threads=1)
    worker.start()
    yield worker
    worker.stop()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OperationalError:  # a shared-cache SQLite lock: look again
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


def wait_state(task_id, states=("finished", "aborted", "failed"), timeout: float = 60.0):
    from apps.tasks.models import Task

    def check():
        task = Task.objects.get(pk=task_id)
        return task if task.state in states else None

    return wait_for(check, timeout)
