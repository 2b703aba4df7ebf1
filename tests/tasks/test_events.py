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
    # Frames that are no JSON object are ignored, as other frames are (channels' own receive
    # raised on them and the socket died with 1011); a ping still answers after them.
    for frame in ({"text": "{not json"}, {"text": ""}, {"bytes": b"\x00"}):
        await comm.send_input({"type": "websocket.receive", **frame})
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from(timeout=5)) == {"type": "pong"}
    await comm.disconnect()

    # A member of another project gets 4404, with its own project in the URL or the victim's.
    for project_id in (world.project.pk, world.other_project.pk):
        comm = WebsocketCommunicator(
            application, f"/ws/projects/{project_id}/tasks/{task.pk}?token={foreign_token}"
        )
        connected, code = await comm.connect(timeout=5)
        assert not connected and code == 4404


def _many_events(world, count):
    task = Task.objects.create(project=world.project, owner=world.owner, kind="train", name="t")
    TaskEvent.objects.bulk_create(
        TaskEvent(task=task, seq=i, kind="epoch", data={"epoch": i}) for i in range(1, count + 1)
    )
    return task, token_pair_for(user=world.member)["access"]


async def _replayed(path, count):
    from config.asgi import application

    comm = WebsocketCommunicator(application, path)
    connected, _ = await comm.connect(timeout=5)
    assert connected
    assert (await comm.receive_json_from(timeout=5))["type"] == "state"
    seqs = [(await comm.receive_json_from(timeout=5))["seq"] for _ in range(count)]
    assert await comm.receive_nothing(timeout=0.2)  # and nothing more
    await comm.disconnect()
    return seqs


async def test_replay_sends_the_newest_events_and_only_those_after_the_clients_last(world):
    """It sent the oldest 1,000 before: a reconnecting client never saw the latest epochs."""
    from apps.tasks.consumers import REPLAY_LIMIT

    task, token = await sync_to_async(_many_events)(world, REPLAY_LIMIT + 5)
    path = f"/ws/projects/{world.project.pk}/tasks/{task.pk}?token={token}"
    assert await _replayed(path, REPLAY_LIMIT) == list(range(6, REPLAY_LIMIT + 6))
    assert await _replayed(f"{path}&after={REPLAY_LIMIT}", 5) == list(
        range(REPLAY_LIMIT + 1, REPLAY_LIMIT + 6)
    )
