"""Deeply nested JSON on the websockets: json raises RecursionError (not ValueError) past
Python's recursion limit, which crashed the consumer instead of answering in the protocol."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from tests.clusters.helpers import make_cluster
from tests.clusters.test_direct_io import _connect, _set_mode

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

DEEP = "[" * 100_000 + "]" * 100_000


def _app():
    from config.asgi import application

    return application


async def test_hanami_handshake_with_deep_json_is_refused_in_the_protocol(world):
    comm = WebsocketCommunicator(_app(), "/")
    connected, _ = await comm.connect(timeout=5)
    assert connected
    await comm.send_to(text_data=DEEP)
    answer = json.loads(await comm.receive_from(timeout=5))
    assert answer["success"] is False and "JSON" in answer["error"]
    await comm.disconnect()


async def test_direct_io_frame_with_deep_json_is_answered_with_an_error(world):
    cluster = await sync_to_async(make_cluster)(world.project, world.member)
    response = await sync_to_async(_set_mode)(world.member, world.project, cluster, "DIRECT")
    assert response.status_code == 200
    comm, connected, _ = await _connect(world.member, world.project, cluster)
    assert connected
    await comm.receive_json_from()
    await comm.send_to(text_data=DEEP)
    answer = await comm.receive_json_from(timeout=5)
    assert answer["type"] == "error" and answer["error"]["code"] == "VALIDATION_ERROR"
    await comm.send_json_to({"type": "ping", "id": 1})
    assert (await comm.receive_json_from(timeout=5))["type"] == "pong"
    await comm.disconnect()
