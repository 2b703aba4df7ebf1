"""Direct io on the Hanami socket: every message answered, errors as the JSON error frame."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.clusters.services import cluster_set_mode
from apps.hanami.proto.messages import REQUEST_TYPE, TRAIN_TYPE, ClusterIO_Message
from tests.clusters.helpers import make_cluster, template
from tests.factories import PASSWORD
from tests.hanami.conftest import token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def _app():
    from config.asgi import application

    return application


def _direct_cluster(world, text=None, mode="DIRECT"):
    cluster = make_cluster(world.project, world.member, text=text or template())
    cluster_set_mode(cluster=cluster, mode=mode)
    return str(cluster.pk)


async def _open(user_id, cluster_uuid):
    token = await sync_to_async(token_for)(user_id, PASSWORD)
    comm = WebsocketCommunicator(_app(), "/")
    assert (await comm.connect(timeout=5))[0]
    await comm.send_to(
        text_data=json.dumps({"token": token, "target": "cluster", "uuid": cluster_uuid})
    )
    return comm, json.loads(await comm.receive_from(timeout=10))


def _message(brick, values, is_last, kind=TRAIN_TYPE, count=None):
    message = ClusterIO_Message(
        brickName=brick,
        isLast=is_last,
        processType=kind,
        numberOfValues=len(values) if count is None else count,
    )
    message.values.extend(values)
    return message.SerializeToString()


async def _error(comm):
    answer = json.loads(await comm.receive_from(timeout=10))
    assert answer["success"] is False
    assert (await comm.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4400}
    return answer["error"]


async def test_handshake_needs_direct_mode(world):
    cluster_uuid = await sync_to_async(_direct_cluster)(world, mode="TASK")
    comm, answer = await _open("bob", cluster_uuid)
    assert answer["success"] is False and "DIRECT" in answer["error"]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (_message("nope", [1.0] * 64, True, REQUEST_TYPE), "Unknown brick"),
        (_message("pixels", [1.0] * 64, True, REQUEST_TYPE, count=3), "numberOfValues"),
        (_message("pixels", [1.0] * 60, True, REQUEST_TYPE), "64 values per sample"),
        (b"\xff\xff\xff\xff", "Malformed"),
    ],
)
async def test_bad_messages_get_the_error_frame(world, frame, reason):
    cluster_uuid = await sync_to_async(_direct_cluster)(world)
    comm, answer = await _open("bob", cluster_uuid)
    assert answer["success"] is True
    await comm.send_to(bytes_data=frame)
    assert reason in await _error(comm)


async def test_train_without_expected_values_and_text_frames_are_refused(world):
    cluster_uuid = await sync_to_async(_direct_cluster)(world)
    comm, _ = await _open("bob", cluster_uuid)
    await comm.send_to(bytes_data=_message("pixels", [0.5] * 64, True, TRAIN_TYPE))
    assert "Missing values for output brick" in await _error(comm)
    comm, _ = await _open("bob", cluster_uuid)
    await comm.send_to(text_data="hello")
    assert "binary" in await _error(comm)


async def test_a_viewer_may_request_but_not_train(world):
    cluster_uuid = await sync_to_async(_direct_cluster)(world)
    comm, answer = await _open("carol", cluster_uuid)
    assert answer["success"] is True
    await comm.send_to(bytes_data=_message("pixels", [0.5] * 64, True, REQUEST_TYPE))
    output = ClusterIO_Message.FromString(await comm.receive_from(timeout=10))
    assert output.brickName == "digit" and len(output.values) == 10
    assert abs(sum(output.values) - 1.0) < 1e-5
    await comm.send_to(bytes_data=_message("pixels", [0.5] * 64, False))
    answer = ClusterIO_Message.FromString(await comm.receive_from(timeout=10))
    assert (answer.isLast, list(answer.values)) == (False, [0.0])
    await comm.send_to(bytes_data=_message("digit", [1.0] + [0.0] * 9, True))
    assert "Only the owner" in await _error(comm)


async def test_two_input_bricks_are_buffered_until_the_last(world):
    text = """version: 1
bricks:
    1,1,1
        input: left
        number_of_neurons: 3
    1,2,1
        input: right
        number_of_neurons: 2
    2,1,1
        number_of_neurons: 8
    3,1,1
        output: out
        number_of_neurons: 2
"""
    cluster_uuid = await sync_to_async(_direct_cluster)(world, text=text)
    comm, answer = await _open("bob", cluster_uuid)
    assert answer["success"] is True
    for _ in range(200):
        for frame in (
            _message("left", [1.0, 0.0, 1.0], False),
            _message("right", [0.0, 1.0], False),
            _message("out", [0.0, 1.0], True),
        ):
            await comm.send_to(bytes_data=frame)
            await comm.receive_from(timeout=10)
    await comm.send_to(bytes_data=_message("left", [1.0, 0.0, 1.0], False, REQUEST_TYPE))
    await comm.receive_from(timeout=10)
    await comm.send_to(bytes_data=_message("right", [0.0, 1.0], True, REQUEST_TYPE))
    output = ClusterIO_Message.FromString(await comm.receive_from(timeout=10))
    assert output.brickName == "out" and output.values[1] > 0.9
    await comm.disconnect()


async def test_leaving_direct_mode_ends_the_socket(world):
    cluster_uuid = await sync_to_async(_direct_cluster)(world)
    comm, answer = await _open("bob", cluster_uuid)
    assert answer["success"] is True

    def to_task():
        from apps.clusters.models import Cluster

        cluster_set_mode(cluster=Cluster.objects.get(pk=cluster_uuid), mode="TASK")

    await sync_to_async(to_task)()
    assert "left DIRECT mode" in await _error(comm)


async def test_a_socket_the_server_closed_drops_late_events_and_still_lets_go(world):
    """After the server closed a socket (a bad frame), a client that does not answer the close
    keeps it open a while: an event then (the cluster leaving DIRECT mode) made the consumer send
    on the closed socket, daphne raised ("Attempt to send on a closed protocol"), and the
    consumer died without disconnect(): its group membership and its runtime connection were
    kept. Now the late event is dropped and the disconnect lets go of the runtime."""
    from autobahn.exception import Disconnected

    from apps.clusters.directio import runtime_get

    app = _app()

    async def like_daphne(scope, receive, send):
        closed = False

        async def send_until_closed(message):
            nonlocal closed
            if closed:
                raise Disconnected("Attempt to send on a closed protocol")
            closed = message["type"] == "websocket.close"
            await send(message)

        await app(scope, receive, send_until_closed)

    cluster_uuid = await sync_to_async(_direct_cluster)(world)
    token = await sync_to_async(token_for)("bob", PASSWORD)
    comm = WebsocketCommunicator(like_daphne, "/")
    assert (await comm.connect(timeout=5))[0]
    await comm.send_to(
        text_data=json.dumps({"token": token, "target": "cluster", "uuid": cluster_uuid})
    )
    assert json.loads(await comm.receive_from(timeout=10))["success"] is True
    assert runtime_get(cluster_uuid).connections == 1
    await comm.send_to(bytes_data=_message("nope", [1.0] * 64, True, REQUEST_TYPE))
    assert "Unknown brick" in await _error(comm)
    # The event reaches the consumer as the group's messages do (through dispatch), in order
    # before the client's disconnect.
    await comm.send_input({"type": "orchard.event", "event": {"type": "directio.closed"}})
    await comm.send_to(bytes_data=_message("pixels", [1.0] * 64, True, REQUEST_TYPE))
    await comm.disconnect()  # re-raises what ended the consumer
    assert await comm.receive_nothing(timeout=0)
    assert runtime_get(cluster_uuid).connections == 0
