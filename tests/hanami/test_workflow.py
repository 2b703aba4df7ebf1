"""The upstream SDK's own API test (testing/python_sdk_api/sdk_api_test.py, `test_workflow` and
`test_direct_io`), replayed request by request against Orchard with a real Dramatiq worker.

admin token -> user + project -> the user's token -> MNIST-format digits uploaded through the
websocket -> cluster from a template -> hosts -> train task -> checkpoint save, cluster deleted and
re-created, checkpoint restored and deleted -> request task -> request result -> check against the
dataset (> 90 %) -> direct mode: 100 train pairs, then a request whose argmax is the trained label.
"""

import asyncio
import base64
import json

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.datasets.demo import digits_arrays
from apps.hanami.proto.messages import (
    REQUEST_TYPE,
    TRAIN_TYPE,
    ClusterIO_Message,
    FileUpload_Message,
    FileUploadResponse_Message,
)
from tests.datasets.conftest import idx_bytes
from tests.factories import PASSWORD
from tests.hanami.conftest import SDK, token_for
from tests.tasks.conftest import stub_broker, stub_worker  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

CHUNK = 128 * 1024
TEMPLATE = (
    "version: 1\n"
    "settings:\n"
    "   neuron_cooldown: 10000000.0\n"
    "   refractory_time: 1\n"
    "   max_connection_distance: 1\n"
    "   enable_reduction: false\n"
    "bricks:\n"
    "    1,1,1\n"
    "        input: test_input\n"
    "        number_of_neurons: 64\n"
    "    2,1,1\n"
    "        number_of_neurons: 128\n"
    "    3,1,1\n"
    "        output: test_output\n"
    "        number_of_neurons: 10"
)


def _app():
    from config.asgi import application

    return application


async def call(sdk, method, path, *args, **kwargs):
    response = await sync_to_async(getattr(sdk, method))(path, *args, **kwargs)
    assert response.status_code == 200, (method, path, response.status_code, response.content)
    return response.json()


async def ws_open(token, target, uuid):
    """`hanami_request.send_ws_request`: connect to `/`, send the JSON handshake."""
    comm = WebsocketCommunicator(_app(), "/")
    assert (await comm.connect(timeout=5))[0]
    await comm.send_to(text_data=json.dumps({"token": token, "target": target, "uuid": uuid}))
    answer = json.loads(await comm.receive_from(timeout=10))
    assert answer["success"] is True, answer
    return comm


async def upload(token, file_uuid, payload: bytes):
    comm = await ws_open(token, "file_upload", file_uuid)
    for position in range(0, len(payload), CHUNK):
        message = FileUpload_Message(position=position, data=payload[position : position + CHUNK])
        await comm.send_to(bytes_data=message.SerializeToString())
        response = FileUploadResponse_Message.FromString(await comm.receive_from(timeout=10))
        assert response.success, response.errorMessage
    await comm.disconnect()


async def upload_mnist_files(sdk, name, images, labels) -> str:
    """`dataset.upload_mnist_files`: create, upload both files, poll progress, finalize."""
    images_raw, labels_raw = idx_bytes(images), idx_bytes(labels)
    created = await call(
        sdk,
        "post",
        "mnist/dataset",
        {"name": name, "input_data_size": len(images_raw), "label_data_size": len(labels_raw)},
    )
    await upload(sdk.token, created["uuid_input_file"], images_raw)
    await upload(sdk.token, created["uuid_label_file"], labels_raw)
    for _ in range(100):
        if (await call(sdk, "get", "dataset/progress", uuid=created["uuid"]))["complete"]:
            break
        await asyncio.sleep(0.05)
    body = {k: created[k] for k in ("uuid", "uuid_input_file", "uuid_label_file")}
    await call(sdk, "put", "mnist/dataset", body)
    return created["uuid"]


async def wait_finished(sdk, task_uuid, cluster_uuid, timeout=120.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        task = await call(sdk, "get", "task", uuid=task_uuid, cluster_uuid=cluster_uuid)
        assert set(task) >= {
            "end_timestamp",
            "percentage_finished",
            "queue_timestamp",
            "start_timestamp",
            "state",
        }
        if task["state"] == "finished":
            return task
        assert task["state"] in ("queued", "active"), task
        assert asyncio.get_running_loop().time() < deadline, "task did not finish"
        await asyncio.sleep(0.1)


async def send_io(comm, brick, values, is_last, process_type):
    """`direct_io.send_train_input` / `send_request_input`: one message, one answer."""
    message = ClusterIO_Message(
        brickName=brick, isLast=is_last, processType=process_type, numberOfValues=len(values)
    )
    message.values.extend(values)
    await comm.send_to(bytes_data=message.SerializeToString())
    return ClusterIO_Message.FromString(await comm.receive_from(timeout=10))


@pytest.mark.slow
async def test_sdk_workflow(world, stub_worker):  # noqa: F811
    admin = SDK(await sync_to_async(token_for)("root", PASSWORD))
    await call(admin, "post", "user", {"id": "tsugumi", "name": "Tsugumi", "password": PASSWORD})
    await call(admin, "post", "project", {"id": "test_project", "name": "Test Project"})
    await call(
        admin,
        "post",
        "user/project",
        {"id": "tsugumi", "project_id": "test_project", "role": "member", "is_project_admin": True},
    )
    sdk = SDK(await sync_to_async(token_for)("tsugumi", PASSWORD))

    # init
    template_b64 = base64.b64encode(TEMPLATE.encode()).decode()
    created = await call(sdk, "post", "cluster", {"name": "test_cluster", "template": template_b64})
    assert set(created) == {"name", "owner_id", "project_id", "uuid", "visibility"}
    assert (created["name"], created["owner_id"], created["project_id"]) == (
        "test_cluster",
        "tsugumi",
        "test_project",
    )
    cluster_uuid = created["uuid"]
    x_train, y_train, x_test, y_test = digits_arrays()
    train_uuid = await upload_mnist_files(sdk, "train_test_dataset", x_train, y_train)
    request_uuid = await upload_mnist_files(sdk, "request_test_dataset", x_test, y_test)

    hosts = await call(sdk, "get", "host/all")
    assert hosts["header"] == ["uuid", "type"] and hosts["body"][0][1] == "cpu"
    if len(hosts["body"]) > 1:
        await call(
            sdk,
            "put",
            "cluster/switch_host",
            {"cluster_uuid": cluster_uuid, "host_uuid": hosts["body"][1][0]},
        )

    # run training
    task = await call(
        sdk,
        "post",
        "task",
        {
            "name": "test_task",
            "type": "train",
            "cluster_uuid": cluster_uuid,
            "dataset_uuid": train_uuid,
        },
    )
    assert set(task) == {"uuid", "name"} and task["name"] == "test_task"
    done = await wait_finished(sdk, task["uuid"], cluster_uuid)
    assert done["percentage_finished"] == 1.0 and done["end_timestamp"] != "-"
    await call(sdk, "delete", "task", uuid=task["uuid"], cluster_uuid=cluster_uuid)

    # save and reload checkpoint
    saved = await call(
        sdk, "post", "cluster/save", {"name": "test_checkpoint", "cluster_uuid": cluster_uuid}
    )
    assert set(saved) == {"uuid", "name"} and saved["name"] == "test_checkpoint"
    listing = await call(sdk, "get", "checkpoint/all")
    assert listing["header"] == ["uuid", "project_id", "owner_id", "visibility", "name"]
    assert [row[0] for row in listing["body"]] == [saved["uuid"]]

    await call(sdk, "delete", "cluster", uuid=cluster_uuid)
    cluster_uuid = (
        await call(sdk, "post", "cluster", {"name": "test_cluster", "template": template_b64})
    )["uuid"]
    restored = await call(
        sdk,
        "post",
        "cluster/load",
        {"checkpoint_uuid": saved["uuid"], "cluster_uuid": cluster_uuid},
    )
    assert restored == {"uuid": cluster_uuid}
    await call(sdk, "delete", "checkpoint", uuid=saved["uuid"])
    again = await sync_to_async(sdk.delete)("checkpoint", uuid=saved["uuid"])
    assert again.status_code == 404 and "error" in again.json()

    # run testing
    task = await call(
        sdk,
        "post",
        "task",
        {
            "name": "test_task",
            "type": "request",
            "cluster_uuid": cluster_uuid,
            "dataset_uuid": request_uuid,
        },
    )
    await wait_finished(sdk, task["uuid"], cluster_uuid)
    tasks = await call(sdk, "get", "task/all", cluster_uuid=cluster_uuid)
    assert tasks["header"] == ["uuid", "state", "percentage", "queued", "start", "end"]
    assert [row[:3] for row in tasks["body"]] == [[task["uuid"], "finished", "1.000000"]]
    await call(sdk, "delete", "task", uuid=task["uuid"], cluster_uuid=cluster_uuid)

    # check request-result (it outlives its task)
    result = await call(sdk, "get", "request_result", uuid=task["uuid"])
    assert result["uuid"] == task["uuid"] and result["name"] == "test_task"
    assert len(result["data"]) == len(y_test) and set(result["data"]) <= set(range(10))
    results = await call(sdk, "get", "request_result/all")
    assert [row[0] for row in results["body"]] == [task["uuid"]]
    check = await call(
        sdk, "post", "dataset/check", {"result_uuid": task["uuid"], "dataset_uuid": request_uuid}
    )
    assert check["accuracy"] > 90.0, check
    await call(sdk, "delete", "request_result", uuid=task["uuid"])

    # direct io (`test_direct_io`): 100 train pairs, then a request -> argmax is the label
    await call(sdk, "put", "cluster/set_mode", {"new_state": "DIRECT", "uuid": cluster_uuid})
    comm = await ws_open(sdk.token, "cluster", cluster_uuid)
    sample = [float(v) for v in x_test[0].reshape(-1)]
    expected = [0.0] * 10
    expected[5] = 1.0
    for _ in range(100):
        answer = await send_io(comm, "test_input", sample, False, TRAIN_TYPE)
        assert (answer.isLast, answer.processType, list(answer.values)) == (
            False,
            TRAIN_TYPE,
            [0.0],
        )
        answer = await send_io(comm, "test_output", expected, True, TRAIN_TYPE)
        assert (answer.isLast, answer.processType, list(answer.values)) == (True, TRAIN_TYPE, [0.0])
    output = await send_io(comm, "test_input", sample, True, REQUEST_TYPE)
    assert output.isLast and output.brickName == "test_output"
    assert output.numberOfValues == 10 == len(output.values)
    assert int(np.argmax(list(output.values))) == 5
    await comm.disconnect()
    await call(sdk, "put", "cluster/set_mode", {"new_state": "TASK", "uuid": cluster_uuid})

    # cleanup
    await call(sdk, "delete", "dataset", uuid=train_uuid)
    await call(sdk, "delete", "dataset", uuid=request_uuid)
    await call(sdk, "delete", "cluster", uuid=cluster_uuid)
    assert (await call(sdk, "get", "cluster/all"))["body"] == []
