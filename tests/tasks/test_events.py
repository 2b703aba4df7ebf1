"""The task events websocket: state first, stored events replayed, live events relayed."""

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from apps.accounts.services import token_pair_for
from apps.core.events import group_name
from apps.tasks.models import Task, TaskEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def _setup(world):
    task = Task.objects.create(project=world.project, owner=world.owner, kind="train", name="t")
    TaskEvent.objects.create(task=task, seq=1, kind="epoch", data={"epoch": 1, "loss": 0.5})
    return (
        task,
        token_pair_for(user=world.member)["access"],
        token_pair_for(user=world.outsider)["access"],
    )


async def test_events_socket(world):
    from config.asgi import application

    task, token, foreign_token = await sync_to_async(_setup)(world)
    path = f"/ws/projects/{world.project.pk}/tasks/{task.pk}"
    comm = WebsocketCommunicator(application, f"{path}?token={token}")
    connected, _ = await comm.connect(timeout=5)
    assert connected
    first = await comm.receive_json_from(timeout=5)
    assert first["type"] == "state" and first["state"] == "queued"
    replay = await comm.receive_json_from(timeout=5)
    assert replay == {
        "type": "epoch",
        "task_id": str(task.pk),
        "seq": 1,
        "replay": True,
        "epoch": 1,
        "loss": 0.5,
    }
    await get_channel_layer().group_send(
        group_name("task", task.pk),
        {"type": "orchard.event", "event": {"type": "progress", "progress": 0.5}},
    )
    assert (await comm.receive_json_from(timeout=5)) == {"type": "progress", "progress": 0.5}
    await comm.disconnect()

    # A member of another project gets 4404, with its own project in the URL or the victim's.
    for project_id in (world.project.pk, world.other_project.pk):
        comm = WebsocketCommunicator(
            application, f"/ws/projects/{project_id}/tasks/{task.pk}?token={foreign_token}"
        )
        connected, code = await comm.connect(timeout=5)
        assert not connected and code == 4404
