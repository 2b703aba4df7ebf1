"""Open sockets do not outlive the caller's rights (issue #13, finding 2).

Before, an open task websocket kept streaming for 20 s after its user was removed from the
project. Every socket now re-checks rights every WEBSOCKET_RECHECK_S seconds, also while nothing
is sent, and closes when they are gone. The interval is made tiny here; the tests wait on the
close itself with a bounded timeout (no sleeps).
"""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.accounts.services import token_pair_for
from apps.tasks.models import Task
from tests.clusters.helpers import make_cluster
from tests.conftest import client_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

WAIT_S = 10  # an upper bound only: the close comes after a few milliseconds


def _app():
    from config.asgi import application

    return application


@pytest.fixture(autouse=True)
def _tiny_recheck_interval(settings):
    settings.WEBSOCKET_RECHECK_S = 0.01


def _remove_member(world, user):
    """Through the real surface: a project admin removes the member."""
    url = f"/api/projects/{world.project.pk}/members/{user.username}"
    response = client_for(world.owner).delete(url)
    assert response.status_code == 204, response.content


async def _closed_with(comm) -> int:
    """Read until the server closes the socket; its close code."""
    while True:
        message = await comm.receive_output(timeout=WAIT_S)
        if message["type"] == "websocket.close":
            return message.get("code")


async def test_task_socket_closes_when_the_member_is_removed(world):
    task = await sync_to_async(Task.objects.create)(
        project=world.project, owner=world.member, name="t", kind="train"
    )
    token = await sync_to_async(lambda: token_pair_for(user=world.member)["access"])()
    path = f"/ws/projects/{world.project.pk}/tasks/{task.pk}?token={token}"
    comm = WebsocketCommunicator(_app(), path)
    connected, _ = await comm.connect(timeout=WAIT_S)
    assert connected
    assert (await comm.receive_json_from(timeout=WAIT_S))["task_id"] == str(task.pk)
    assert await comm.receive_nothing(timeout=0.1), "still a member: the socket stays open"

    await sync_to_async(_remove_member)(world, world.member)
    assert await _closed_with(comm) == 4404
    await comm.disconnect()


async def test_task_socket_closes_when_the_user_is_deactivated(world):
    task = await sync_to_async(Task.objects.create)(
        project=world.project, owner=world.member, name="t", kind="train"
    )
    token = await sync_to_async(lambda: token_pair_for(user=world.member)["access"])()
    comm = WebsocketCommunicator(
        _app(), f"/ws/projects/{world.project.pk}/tasks/{task.pk}?token={token}"
    )
    assert (await comm.connect(timeout=WAIT_S))[0]
    await comm.receive_json_from(timeout=WAIT_S)
    response = await sync_to_async(
        lambda: client_for(world.global_admin).patch(
            f"/api/users/{world.member.username}", {"is_active": False}, format="json"
        )
    )()
    assert response.status_code == 200, response.content
    assert await _closed_with(comm) == 4401
    await comm.disconnect()


async def test_idle_direct_io_socket_closes_when_the_member_is_removed(world):
    cluster = await sync_to_async(make_cluster)(world.project, world.member)
    set_mode = await sync_to_async(
        lambda: client_for(world.member).put(
            f"/api/projects/{world.project.pk}/clusters/{cluster.pk}/mode",
            {"mode": "DIRECT"},
            format="json",
        )
    )()
    assert set_mode.status_code == 200
    token = await sync_to_async(lambda: token_pair_for(user=world.member)["access"])()
    path = f"/ws/projects/{world.project.pk}/clusters/{cluster.pk}/io?token={token}"
    comm = WebsocketCommunicator(_app(), path)
    assert (await comm.connect(timeout=WAIT_S))[0]
    assert (await comm.receive_json_from(timeout=WAIT_S))["type"] == "ready"

    # No frame is sent: the socket is closed by the periodic re-check alone.
    await sync_to_async(_remove_member)(world, world.member)
    assert await _closed_with(comm) == 4404
    await comm.disconnect()


async def test_idle_hanami_upload_socket_closes_when_the_member_is_removed(world):
    from apps.datasets import uploads as dataset_uploads

    session = await sync_to_async(dataset_uploads.upload_session_create)(
        project=world.project, actor=world.member, size=8
    )
    token = await sync_to_async(
        lambda: token_pair_for(user=world.member, project=world.project)["access"]
    )()
    comm = WebsocketCommunicator(_app(), "/")
    assert (await comm.connect(timeout=WAIT_S))[0]
    first = {"token": token, "target": "file_upload", "uuid": str(session.pk)}
    await comm.send_to(text_data=json.dumps(first))
    assert json.loads(await comm.receive_from(timeout=WAIT_S))["success"] is True

    await sync_to_async(_remove_member)(world, world.member)
    refusal = await comm.receive_output(timeout=WAIT_S)
    assert json.loads(refusal["bytes"])["success"] is False
    assert await _closed_with(comm) == 4401
    await comm.disconnect()
