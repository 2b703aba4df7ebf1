"""A real worker process (`manage.py orchard_worker`) on Redis and PostgreSQL, as in team mode.

Runs only where the test process itself uses a Redis broker (BROKER_URL=redis://...) and a
PostgreSQL database (DATABASE_URL=postgres://...), which the worker subprocess then shares: CI sets
both. Elsewhere these tests are skipped.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dramatiq
import pytest
from django.conf import settings
from django.db import connection

from apps.clusters.models import Cluster
from apps.tasks.models import Task, TaskEvent
from tests.clusters.helpers import make_cluster
from tests.conftest import client_for
from tests.tasks.conftest import wait_for, wait_state

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
WORKER_BOOT = (
    "import django; django.setup(); "
    "from django.core.management import call_command; "
    "import sys; call_command('orchard_worker', *sys.argv[1:])"
)


def _requirements():
    from dramatiq.brokers.redis import RedisBroker

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL) so that a worker process sees the test rows")
    broker = dramatiq.get_broker()
    if not isinstance(broker, RedisBroker):
        pytest.skip("needs BROKER_URL=redis://...")
    try:
        broker.client.ping()
    except Exception as exc:
        pytest.skip(f"Redis unreachable: {exc}")
    return broker


def _database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] or ""
    if s.get("PASSWORD"):
        auth += f":{s['PASSWORD']}"
    host = f"{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}"
    return f"postgres://{auth}@{host}/{s['NAME']}"


@pytest.fixture
def worker_process(tmp_path):
    broker = _requirements()
    broker.flush_all()
    procs = []
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": _database_url(),
        "BROKER_URL": settings.BROKER_URL,
        "ORCHARD_DATA_DIR": str(Path(settings.MEDIA_ROOT).parent),
        "TASK_HEARTBEAT_INTERVAL_S": "0.2",
        "PYTHONPATH": str(ROOT),
    }

    def start(stale_after: float = 60.0):
        log = open(tmp_path / f"worker{len(procs)}.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER_BOOT,
                "--queue",
                "cpu",
                "--stale-after",
                str(stale_after),
                "--reap-every",
                "0.5",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    broker.flush_all()


def _create(client, project, kind, cluster, dataset, **params):
    r = client.post(
        f"/api/projects/{project.pk}/tasks",
        {
            "name": kind,
            "kind": kind,
            "cluster_id": str(cluster.pk),
            "dataset_id": str(dataset.pk),
            "params": params,
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    return r.json()["data"]["id"]


def test_worker_process_trains_requests_and_checks(world, digits, worker_process):
    worker_process()
    train_set, test_set = digits
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    train_id = _create(client, world.project, "train", cluster, train_set)
    request_id = _create(client, world.project, "request", cluster, test_set)
    done = wait_state(request_id, timeout=120)
    assert Task.objects.get(pk=train_id).state == "finished"
    assert done.state == "finished", (done.error, done.traceback)
    r = client.post(
        f"/api/projects/{world.project.pk}/results/{request_id}/check",
        {"dataset_id": str(test_set.pk)},
        format="json",
    )
    assert r.json()["data"]["accuracy"] >= 97.0


def test_sigkilled_worker_task_resumes_from_its_checkpoint(world, digits, worker_process):
    first = worker_process()
    train_set, _ = digits
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    epochs = 40
    task_id = _create(
        client, world.project, "train", cluster, train_set, epochs=epochs, batch_size=8
    )
    wait_for(
        lambda: TaskEvent.objects.filter(task_id=task_id, kind="epoch").count() >= 3, timeout=120
    )
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    killed_at = TaskEvent.objects.filter(task_id=task_id, kind="epoch").count()
    assert Task.objects.get(pk=task_id).state == "active"
    assert killed_at < epochs

    worker_process(stale_after=2.0)
    done = wait_state(task_id, timeout=180)
    assert done.state == "finished", (done.error, done.traceback)
    assert done.attempts == 2
    assert done.result["resumed_from_epoch"] > 0
    assert done.result["epochs_completed"] == epochs
    seen = list(
        TaskEvent.objects.filter(task_id=task_id, kind="epoch").values_list(
            "data__epoch", flat=True
        )
    )
    assert sorted(set(seen)) == list(range(1, epochs + 1))
    assert len(seen) == epochs  # an epoch redone after the resume is stored once
    assert TaskEvent.objects.filter(task_id=task_id, kind="resumed").count() == 1
    assert Cluster.objects.get(pk=cluster.pk).version == 1  # the weights were stored once
    time.sleep(0.5)
    assert Task.objects.get(pk=task_id).state == "finished"


def test_sigterm_requeues_the_running_task_at_once(world, digits, worker_process):
    first = worker_process()
    train_set, _ = digits
    client = client_for(world.member)
    cluster = make_cluster(world.project, world.member)
    epochs = 40
    task_id = _create(
        client, world.project, "train", cluster, train_set, epochs=epochs, batch_size=8
    )
    wait_for(
        lambda: TaskEvent.objects.filter(task_id=task_id, kind="epoch").count() >= 3, timeout=120
    )
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    row = Task.objects.get(pk=task_id)
    # Not failed, the attempt not counted, queued again at once (not after the stale period).
    assert (row.state, row.attempts, row.error) == ("queued", 0, "")

    worker_process(stale_after=600.0)
    done = wait_state(task_id, timeout=180)
    assert done.state == "finished", (done.error, done.traceback)
    assert done.attempts == 1
    assert done.result["resumed_from_epoch"] >= 3
    seen = list(
        TaskEvent.objects.filter(task_id=task_id, kind="epoch").values_list(
            "data__epoch", flat=True
        )
    )
    assert seen == list(range(1, epochs + 1))
