"""The Hanami websocket and the SDK's end-to-end dataset flow (REST + file upload socket)."""

import asyncio
import json

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.datasets.demo import digits_arrays
from apps.datasets.models import UploadSession
from apps.hanami.proto.messages import FileUpload_Message, FileUploadResponse_Message
from tests.datasets.conftest import idx_bytes
from tests.factories import PASSWORD
from tests.hanami.conftest import SDK, token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

CHUNK = 128 * 1024


def _app():
    from config.asgi import application

    return application


async def _open(token, target, object_id):
    """Connect to `/` like the SDK and send the first frame; (communicator, first answer)."""
    comm = WebsocketCommunicator(_app(), "/")
    connected, _ = await comm.connect(timeout=5)
    assert connected
    await comm.send_to(text_data=json.dumps({"token": token, "target": target, "uuid": object_id}))
    answer = await comm.receive_from(timeout=5)
    assert isinstance(answer, bytes), "the handshake answer is a binary frame"
    return comm, json.loads(answer)


async def _upload(token, file_uuid, payload: bytes):
    comm, answer = await _open(token, "file_upload", file_uuid)
    assert answer["success"] is True and answer["uuid"], answer
    responses = 0
    for position in range(0, len(payload), CHUNK):
        message = FileUpload_Message(position=position, data=payload[position : position + CHUNK])
        await comm.send_to(bytes_data=message.SerializeToString())
        response = FileUploadResponse_Message.FromString(await comm.receive_from(timeout=5))
        assert response.success, response.errorMessage
        responses += 1
    await comm.disconnect()
    return responses


def _sdk_call(sdk, method, path, *args, **kwargs):
    return sync_to_async(getattr(sdk, method))(path, *args, **kwargs)


async def test_sdk_end_to_end(world):
    admin = SDK(await sync_to_async(token_for)("root", PASSWORD))
    r = await _sdk_call(
        admin, "post", "user", {"id": "tsugumi", "name": "Tsugumi", "password": PASSWORD}
    )
    assert r.status_code == 200, r.content
    r = await _sdk_call(admin, "post", "project", {"id": "test_project", "name": "Test Project"})
    assert r.status_code == 200, r.content
    r = await _sdk_call(
        admin,
        "post",
        "user/project",
        {
            "id": "tsugumi",
            "project_id": "test_project",
            "role": "member",
            "is_project_admin": False,
        },
    )
    assert r.status_code == 200, r.content
    sdk = SDK(await sync_to_async(token_for)("tsugumi", PASSWORD))

    x_train, y_train, _, _ = digits_arrays()
    images = np.concatenate([x_train] * 3)  # > 128 KiB: several chunks
    labels = np.concatenate([y_train] * 3)
    images_raw, labels_raw = idx_bytes(images), idx_bytes(labels)
    r = await _sdk_call(
        sdk,
        "post",
        "mnist/dataset",
        {
            "name": "train_test_dataset",
            "input_data_size": len(images_raw),
            "label_data_size": len(labels_raw),
        },
    )
    assert r.status_code == 200, r.content
    created = r.json()

    assert await _upload(sdk.token, created["uuid_input_file"], images_raw) == 3
    assert await _upload(sdk.token, created["uuid_label_file"], labels_raw) == 1

    for _ in range(20):
        progress = (await _sdk_call(sdk, "get", "dataset/progress", uuid=created["uuid"])).json()
        if progress["complete"]:
            break
        await asyncio.sleep(0.05)
    assert progress["complete"] is True

    r = await _sdk_call(
        sdk,
        "put",
        "mnist/dataset",
        {k: created[k] for k in ("uuid", "uuid_input_file", "uuid_label_file")},
    )
    assert r.status_code == 200, r.content
    got = (await _sdk_call(sdk, "get", "dataset", uuid=created["uuid"])).json()
    assert got["lines"] == len(images) == 1437 * 3
    assert (got["inputs"], got["outputs"], got["type"]) == (64, 10, "mnist")
    assert (got["project_id"], got["owner_id"]) == ("test_project", "tsugumi")
    listing = (await _sdk_call(sdk, "get", "dataset/all")).json()
    assert [row[0] for row in listing["body"]] == [created["uuid"]]
    r = await _sdk_call(sdk, "delete", "dataset", uuid=created["uuid"])
    assert r.status_code == 200
    listing = (await _sdk_call(sdk, "get", "dataset/all")).json()
    assert listing["body"] == []


def _pending(world):
    sdk = SDK(token_for("bob", PASSWORD))
    created = sdk.post("csv/dataset", {"name": "t", "input_data_size": 10}).json()
    return sdk.token, created


async def test_upload_chunk_errors_are_answered_per_chunk(world):
    token, created = await sync_to_async(_pending)(world)
    comm, answer = await _open(token, "file_upload", created["uuid_input_file"])
    assert answer["success"] is True
    # Out of the declared size: answered with success=false, the socket stays usable.
    await comm.send_to(bytes_data=FileUpload_Message(position=8, data=b"abcd").SerializeToString())
    response = FileUploadResponse_Message.FromString(await comm.receive_from(timeout=5))
    assert not response.success and "outside" in response.errorMessage
    await comm.send_to(bytes_data=b"\xff\xff\xff")
    response = FileUploadResponse_Message.FromString(await comm.receive_from(timeout=5))
    assert not response.success
    await comm.send_to(
        bytes_data=FileUpload_Message(position=0, data=b"a,b\n1,2\n3,").SerializeToString()
    )
    response = FileUploadResponse_Message.FromString(await comm.receive_from(timeout=5))
    assert response.success
    await comm.disconnect()
    session = await sync_to_async(UploadSession.objects.get)(pk=created["uuid_input_file"])
    assert session.received_bytes == 10


@pytest.mark.parametrize(
    "first",
    [
        "not json",
        json.dumps(["a"]),
        json.dumps({"token": "x", "target": "nowhere", "uuid": "x"}),
        json.dumps({"target": "file_upload", "uuid": "x"}),
        json.dumps({"token": "garbage", "target": "file_upload", "uuid": "x"}),
    ],
)
async def test_bad_first_frames_are_refused(world, first):
    comm = WebsocketCommunicator(_app(), "/")
    assert (await comm.connect(timeout=5))[0]
    await comm.send_to(text_data=first)
    answer = json.loads(await comm.receive_from(timeout=5))
    assert answer["success"] is False and answer["error"]
    assert (await comm.receive_output(timeout=5))["type"] == "websocket.close"
    # As a client does after the server's close: the consumer ends itself, not at the event
    # loop's teardown (one CI run hung there for 300 s cancelling it, Redis channel layer).
    await comm.disconnect()


async def test_a_socket_that_never_sends_its_first_frame_is_closed(world, settings):
    """The socket authenticates from its first frame; one that never comes held the socket
    (and its slot in daphne) for ever: daphne's pings kept it up."""
    settings.HANAMI_FIRST_FRAME_S = 0.05
    comm = WebsocketCommunicator(_app(), "/")
    assert (await comm.connect(timeout=5))[0]
    answer = json.loads(await comm.receive_from(timeout=10))
    assert answer == {
        "success": False,
        "error": "No first message {token, target, uuid} within 0.05 s.",
    }
    assert (await comm.receive_output(timeout=5))["type"] == "websocket.close"
    await comm.disconnect()


async def test_cluster_target_refuses_unknown_and_malformed_clusters(world):
    token, _ = await sync_to_async(_pending)(world)
    for object_id in ("9f86921d-9a7c-44a2-836c-1683928d9354", "fail_cluster", ""):
        comm, answer = await _open(token, "cluster", object_id)
        assert answer == {"success": False, "error": "Cluster not found."}
        assert (await comm.receive_output(timeout=5))["type"] == "websocket.close"
