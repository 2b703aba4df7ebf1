"""Events published from a worker thread (the embedded mode's in-process worker) reach a socket
on the server's event loop at once, with the in-memory channel layer as with Redis."""

import threading
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.accounts.services import token_pair_for
from apps.core import events
from apps.tasks.models import Task, target_of
from tests.clusters.helpers import make_cluster

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def _task(world):
    cluster = make_cluster(world.project, world.member)
    task = Task.objects.create(
        project=world.project, owner=world.member, kind="train", name="t", **target_of(cluster)
    )
    return task, token_pair_for(user=world.member)["access"]


async def test_a_worker_thread_event_wakes_the_socket(world):
    from config.asgi import application

    task, token = await sync_to_async(_task)(world)
    path = f"/ws/projects/{world.project.pk}/tasks/{task.pk}?token={token}"
    comm = WebsocketCommunicator(application, path)
    assert (await comm.connect(timeout=5))[0]
    assert (await comm.receive_json_from(timeout=5))["type"] == "state"

    group = events.group_name("task", task.pk)

    def later():
        time.sleep(0.2)  # publish while the server loop sleeps in select(), as in daphne
        events.publish(group, {"type": "progress", "progress": 0.5})

    worker = threading.Thread(target=later)
    worker.start()
    # The bug this guards against left the event in the queue for seconds: 1 s is ample.
    event = await comm.receive_json_from(timeout=1)
    assert event == {"type": "progress", "progress": 0.5}
    await sync_to_async(worker.join)()
    await comm.disconnect()
