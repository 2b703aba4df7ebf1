"""The embedded mode (`make run`: SQLite, in-memory broker, worker threads in the server) killed
with tasks in flight: after a restart every task finishes. The in-memory broker forgets its queue,
so the server re-sends queued tasks and re-queues the running ones from the Task rows at start
(4 of 6 in-flight tasks were lost before, and the running ones waited for an unrelated submit)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from bench.deployment import embedded as embedded_mode
from tests.deployed.conftest import Team
from tests.deployed.test_team_mode import demo, events_until, new_cluster, submit, wait_task

pytestmark = [pytest.mark.slow]


@pytest.fixture
def embedded(tmp_path):
    extra = dict(
        TASK_HEARTBEAT_INTERVAL_S="0.2",
        TASK_HEARTBEAT_STALE_S="3",
        TASK_CHECKPOINT_INTERVAL_S="0",
        LOGIN_THROTTLE_RATE="1000/min",
    )
    with embedded_mode(workdir=tmp_path, extra_env=extra, cls=Team) as deployment:
        yield deployment


def test_tasks_in_flight_survive_a_killed_embedded_server(embedded):
    project, datasets = demo(embedded)
    clusters = [new_cluster(embedded, project, f"restart-{i}") for i in range(3)]
    epochs = 12
    tasks = [
        submit(embedded, project, "train", cluster, datasets["digits-train"], epochs=epochs)
        for cluster in clusters
    ]
    tasks += [submit(embedded, project, "request", clusters[0], datasets["digits-test"])]
    asyncio.run(
        events_until(
            embedded, project, tasks[0], lambda e: e.get("type") == "epoch" and e["epoch"] >= 2
        )
    )
    embedded.stop(embedded.server, signal.SIGKILL)  # no goodbye: a crash, an OOM kill
    embedded.start_server()
    embedded.login()
    for task_id in tasks:
        done = wait_task(embedded, project, task_id)
        assert done["state"] == "finished", (task_id, done["error"])
    for task_id in tasks[:3]:
        assert wait_task(embedded, project, task_id)["result"]["epochs_completed"] == epochs
