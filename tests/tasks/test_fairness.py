"""Fair sharing of a host queue between projects (#13), with a real Dramatiq worker.

Rule: on one host queue, a project that already has TASK_PROJECT_MAX_ACTIVE active tasks does not
start another while a different project, below that share there, has a task waiting that could
start; alone on the queue a project may use every worker slot.
"""

import threading

import dramatiq
import pytest

from apps.tasks import registry, services
from apps.tasks.models import Task
from tests.tasks.conftest import wait_for, wait_state

pytestmark = pytest.mark.django_db(transaction=True)

GATES: dict[str, threading.Event] = {}


def _hold(ctx):
    """A long task: it runs until the test opens its gate (or it must stop)."""
    gate = GATES[ctx.task.name]
    ctx.progress(0.1)
    while not gate.wait(0.02):
        if ctx.should_stop():
            return {"stopped": True}
    return {"released": True}


@pytest.fixture
def hold_kind():
    registry.register("fair-hold", _hold)
    GATES.clear()
    yield
    for gate in GATES.values():
        gate.set()


def _submit(project, user, name):
    GATES[name] = threading.Event()
    task = services.task_create(project=project, actor=user, kind="fair-hold", name=name)
    return str(task.pk)


def test_second_project_is_not_starved(world, stub_broker, hold_kind, settings):
    settings.TASK_PROJECT_MAX_ACTIVE = 1
    a = [_submit(world.project, world.owner, f"a{i}") for i in range(3)]
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        # Alone on the queue, project A uses both slots.
        wait_for(lambda: Task.objects.filter(pk__in=a[:2], state="active").count() == 2)
        assert Task.objects.get(pk=a[2]).state == "queued"

        b = _submit(world.other_project, world.outsider, "b")
        GATES["a0"].set()  # one slot frees: A's third task and B's task compete for it
        first = wait_for(
            lambda: list(
                Task.objects.filter(pk__in=[a[2], b], state="active").values_list("pk", flat=True)
            )
        )
        assert [str(pk) for pk in first] == [b]
        assert Task.objects.get(pk=a[2]).state == "queued"

        for gate in GATES.values():
            gate.set()
        rows = [wait_state(pk) for pk in [*a, b]]
    finally:
        for gate in GATES.values():
            gate.set()
        worker.stop()
    assert [row.state for row in rows] == ["finished"] * 4, [row.error for row in rows]
    assert [row.attempts for row in rows] == [1] * 4  # waiting is not an attempt
    assert rows[3].started_at <= rows[2].started_at
