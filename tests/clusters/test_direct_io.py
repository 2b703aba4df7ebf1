"""Direct io: the runtime rules (DIRECT mode only, empty queue, write-back) through the main API's
io socket (JSON and binary float32 frames) and its REST mode switch."""

import json
from datetime import timedelta

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from apps.accounts.services import membership_remove, token_pair_for
from apps.clusters import directio
from apps.clusters.models import Cluster
from apps.tasks.models import Task, target_of
from tests.clusters.helpers import make_cluster
from tests.conftest import client_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def _app():
    from config.asgi import application

    return application


def _mode_url(project, cluster):
    return f"/api/projects/{project.pk}/clusters/{cluster.pk}/mode"


def _set_mode(user, project, cluster, mode):
    return client_for(user).put(_mode_url(project, cluster), {"mode": mode}, format="json")


async def _connect(user, project, cluster, token=None):
    token = token or await sync_to_async(lambda: token_pair_for(user=user)["access"])()
    path = f"/ws/projects/{project.pk}/clusters/{cluster.pk}/io?token={token}"
    comm = WebsocketCommunicator(_app(), path)
    connected, code = await comm.connect(timeout=10)
    return comm, connected, code


@pytest.fixture
def direct_cluster(world):
    cluster = make_cluster(world.project, world.member)
    assert _set_mode(world.member, world.project, cluster, "DIRECT").status_code == 200
    return cluster


def _sample():
    rng = np.random.default_rng(0)
    return rng.random(64, dtype=np.float32)


async def test_json_request_and_train_frames(world, direct_cluster):
    comm, connected, _ = await _connect(world.member, world.project, direct_cluster)
    assert connected
    ready = await comm.receive_json_from()
    assert ready == {
        "type": "ready",
        "cluster_id": str(direct_cluster.pk),
        "inputs": {"pixels": 64},
        "outputs": {"digit": 10},
        "can_train": True,
    }
    x = _sample().tolist()
    target = [0.0] * 10
    target[3] = 1.0
    losses = []
    for step in range(30):
        await comm.send_json_to(
            {"type": "train", "inputs": {"pixels": x}, "expected": {"digit": target}, "id": step}
        )
        answer = await comm.receive_json_from()
        assert answer["type"] == "trained" and answer["id"] == step
        losses.append(answer["loss"])
    assert losses[-1] < losses[0] / 4
    await comm.send_json_to({"type": "request", "inputs": {"pixels": [x, x]}, "id": "r"})
    answer = await comm.receive_json_from()
    scores = np.asarray(answer["outputs"]["digit"])
    assert answer["id"] == "r" and scores.shape == (2, 10)
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-5) and scores.argmax(axis=1).tolist() == [
        3,
        3,
    ]
    await comm.disconnect()
    # The last connection wrote the weights back: a new version of the cluster.
    cluster = await sync_to_async(Cluster.objects.get)(pk=direct_cluster.pk)
    assert cluster.version == 1
    # The model stays loaded while the cluster is in DIRECT mode: the next socket attaches at once.
    assert directio.runtime_get(str(cluster.pk)) is not None


async def test_binary_frames(world, direct_cluster):
    comm, connected, _ = await _connect(world.member, world.project, direct_cluster)
    assert connected
    await comm.receive_json_from()
    x = np.stack([_sample(), _sample()[::-1].copy()])
    y = np.zeros((2, 10), np.float32)
    y[0, 1] = y[1, 7] = 1.0
    for _ in range(40):
        await comm.send_to(bytes_data=b"T" + x.astype("<f4").tobytes() + y.tobytes())
        loss = np.frombuffer(await comm.receive_from(timeout=10), dtype="<f4")
        assert loss.shape == (1,)
    await comm.send_to(bytes_data=b"R" + x.astype("<f4").tobytes())
    scores = np.frombuffer(await comm.receive_from(timeout=10), dtype="<f4").reshape(2, 10)
    assert scores.argmax(axis=1).tolist() == [1, 7]
    # Bad binary frames answer a JSON error and keep the socket open.
    for frame in (b"R" + b"\x00" * 6, b"X" + x[0].tobytes(), b"T" + x[0].tobytes(), b"R"):
        await comm.send_to(bytes_data=frame)
        error = json.loads(await comm.receive_from(timeout=10))
        assert error["type"] == "error" and error["error"]["code"] == "VALIDATION_ERROR"
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from())["type"] == "pong"
    await comm.disconnect()


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "request", "inputs": {"nope": [1.0] * 64}},
        {"type": "request", "inputs": {"pixels": [1.0] * 63}},
        {"type": "request", "inputs": {"pixels": [float("nan")] * 64}},
        {"type": "request", "inputs": {"pixels": "x"}},
        {"type": "request", "inputs": []},
        {"type": "train", "inputs": {"pixels": [1.0] * 64}, "expected": {"digit": [1.0] * 9}},
        {"type": "train", "inputs": {"pixels": [1.0] * 128}, "expected": {"digit": [1.0] * 10}},
        {"type": "fly"},
        ["not", "an", "object"],
    ],
)
async def test_bad_json_frames_are_answered_with_the_reason(world, direct_cluster, frame):
    comm, connected, _ = await _connect(world.member, world.project, direct_cluster)
    assert connected
    await comm.receive_json_from()
    await comm.send_json_to(frame)
    answer = await comm.receive_json_from()
    assert answer["type"] == "error" and answer["error"]["code"] == "VALIDATION_ERROR", answer
    await comm.send_to(text_data="{not json")
    answer = await comm.receive_json_from()
    assert answer["type"] == "error"
    await comm.disconnect()


async def test_refused_in_task_mode_and_for_other_projects(world):
    cluster = await sync_to_async(make_cluster)(world.project, world.member)
    _, connected, code = await _connect(world.member, world.project, cluster)
    assert (connected, code) == (False, 4409)
    await sync_to_async(_set_mode)(world.member, world.project, cluster, "DIRECT")
    _, connected, code = await _connect(world.outsider, world.project, cluster)
    assert (connected, code) == (False, 4404)
    _, connected, code = await _connect(world.outsider, world.other_project, cluster)
    assert (connected, code) == (False, 4404)
    runtime = directio.runtime_get(str(cluster.pk))  # maybe warmed by set_mode, never attached
    assert runtime is None or runtime.connections == 0, "refused sockets attached to the model"


async def test_viewers_may_request_but_not_train(world, direct_cluster):
    comm, connected, _ = await _connect(world.viewer, world.project, direct_cluster)
    assert connected
    assert (await comm.receive_json_from())["can_train"] is False
    x = _sample().tolist()
    await comm.send_json_to({"type": "request", "inputs": {"pixels": x}})
    assert (await comm.receive_json_from())["type"] == "output"
    await comm.send_json_to(
        {"type": "train", "inputs": {"pixels": x}, "expected": {"digit": [1.0] + [0.0] * 9}}
    )
    answer = await comm.receive_json_from()
    assert answer["error"]["code"] == "FORBIDDEN"
    await comm.disconnect()


async def test_switching_to_task_mode_writes_back_and_closes_sockets(world, direct_cluster):
    comm, connected, _ = await _connect(world.member, world.project, direct_cluster)
    assert connected
    await comm.receive_json_from()
    x = _sample().tolist()
    await comm.send_json_to(
        {"type": "train", "inputs": {"pixels": x}, "expected": {"digit": [1.0] + [0.0] * 9}}
    )
    assert (await comm.receive_json_from())["type"] == "trained"
    r = await sync_to_async(_set_mode)(world.member, world.project, direct_cluster, "TASK")
    assert r.status_code == 200 and r.json()["data"]["mode"] == "TASK"
    closed = await comm.receive_json_from()
    assert closed["type"] == "closed"
    assert (await comm.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4409}
    cluster = await sync_to_async(Cluster.objects.get)(pk=direct_cluster.pk)
    assert cluster.version == 1, "the trained step was written back before TASK mode"


async def test_mode_rules_empty_queue_and_no_tasks_in_direct_mode(world, digits_sets):
    train_set, _ = digits_sets
    cluster = await sync_to_async(make_cluster)(world.project, world.member)
    client = await sync_to_async(client_for)(world.member)
    tasks_url = f"/api/projects/{world.project.pk}/tasks"
    body = {"name": "t", "kind": "train", "cluster_id": str(cluster.pk), "dataset_id": train_set}
    r = await sync_to_async(client.post)(tasks_url, body, format="json")
    assert r.status_code == 201
    r = await sync_to_async(_set_mode)(world.member, world.project, cluster, "DIRECT")
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"
    await sync_to_async(Task.objects.filter(**target_of(cluster)).update)(state="aborted")
    r = await sync_to_async(_set_mode)(world.member, world.project, cluster, "DIRECT")
    assert r.status_code == 200
    r = await sync_to_async(client.post)(tasks_url, body, format="json")
    assert r.status_code == 409, "no task may start on a cluster in DIRECT mode"


async def test_expired_token_and_lost_membership_close_the_socket(world, direct_cluster, settings):
    token = AccessToken.for_user(world.member)
    token.set_exp(lifetime=timedelta(seconds=1))
    comm, connected, _ = await _connect(world.member, world.project, direct_cluster, str(token))
    assert connected
    await comm.receive_json_from()
    import asyncio

    await asyncio.sleep(1.1)
    await comm.send_json_to({"type": "request", "inputs": {"pixels": _sample().tolist()}})
    assert (await comm.receive_json_from())["error"]["code"] == "UNAUTHORIZED"
    assert (await comm.receive_output(timeout=5))["code"] == 4401

    settings.DIRECTIO_RECHECK_S = 0
    comm, connected, _ = await _connect(world.viewer, world.project, direct_cluster)
    assert connected
    await comm.receive_json_from()
    await sync_to_async(membership_remove)(project=world.project, user=world.viewer)
    await comm.send_json_to({"type": "request", "inputs": {"pixels": _sample().tolist()}})
    answer = await comm.receive_json_from()
    assert answer["type"] == "error" and answer["error"]["code"] == "NOT_FOUND"
    await comm.disconnect()


@pytest.fixture
def digits_sets(world):
    from apps.datasets.demo import create_demo_datasets
    from apps.datasets.models import Dataset

    create_demo_datasets(project=world.project, actor=world.owner)
    qs = Dataset.objects.filter(project=world.project)
    return str(qs.get(name="digits-train").pk), str(qs.get(name="digits-test").pk)


async def test_training_writes_weights_back_periodically(world, direct_cluster, settings):
    import asyncio

    settings.DIRECTIO_FLUSH_INTERVAL_S = 0
    comm, connected, _ = await _connect(world.member, world.project, direct_cluster)
    assert connected
    await comm.receive_json_from()
    x = _sample().tolist()
    await comm.send_json_to(
        {"type": "train", "inputs": {"pixels": x}, "expected": {"digit": [1.0] + [0.0] * 9}}
    )
    assert (await comm.receive_json_from())["type"] == "trained"
    for _ in range(100):  # the write-back runs in the background, the socket stays open
        cluster = await sync_to_async(Cluster.objects.get)(pk=direct_cluster.pk)
        if cluster.version == 1:
            break
        await asyncio.sleep(0.05)
    assert cluster.version == 1
    assert directio.runtime_get(str(direct_cluster.pk)) is not None, "still loaded"
    await comm.disconnect()


async def test_entering_direct_mode_warms_the_model_before_any_socket(world):
    """The model loads when the cluster enters DIRECT mode (and at server start), not inside the
    first socket's handshake, which daphne gives 5 s."""
    cluster = await sync_to_async(make_cluster)(world.project, world.member)
    assert directio.runtime_get(str(cluster.pk)) is None
    await sync_to_async(_set_mode)(world.member, world.project, cluster, "DIRECT")

    def warmed():
        directio.warm_in_background([str(cluster.pk)]).join(60)
        return directio.runtime_get(str(cluster.pk))

    runtime = await sync_to_async(warmed)()
    assert runtime is not None and runtime.connections == 0
    comm, connected, _ = await _connect(world.member, world.project, cluster)
    assert connected and directio.runtime_get(str(cluster.pk)) is runtime  # attached, not loaded
    await comm.disconnect()
    await sync_to_async(_set_mode)(world.member, world.project, cluster, "TASK")
    assert directio.runtime_get(str(cluster.pk)) is None


async def test_a_step_that_overflows_is_refused_and_changes_nothing(world, direct_cluster):
    """Values near float32's limit are finite, but the step's loss and gradients overflow: the
    step answered loss NaN (not even JSON), every weight became NaN, and the NaN weights were
    written back to the cluster for good."""
    comm, connected, _ = await _connect(world.member, world.project, direct_cluster)
    assert connected
    await comm.receive_json_from()
    x = _sample().tolist()
    await comm.send_json_to({"type": "request", "inputs": {"pixels": x}, "id": "before"})
    before = (await comm.receive_json_from())["outputs"]["digit"]
    huge = {"type": "train", "inputs": {"pixels": [3e38] * 64}, "expected": {"digit": [3e38] * 10}}
    await comm.send_json_to({**huge, "id": "h"})
    answer = await comm.receive_json_from()
    assert answer["type"] == "error" and answer["id"] == "h"
    assert "not finite" in answer["error"]["message"], answer
    await comm.send_json_to({"type": "request", "inputs": {"pixels": x}, "id": "after"})
    assert (await comm.receive_json_from())["outputs"]["digit"] == before
    await comm.disconnect()
    cluster = await sync_to_async(Cluster.objects.get)(pk=direct_cluster.pk)
    assert cluster.version == 0  # nothing changed, nothing written back


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("", "JSON objects"),  # channels' own receive raised on an empty text frame: 1011
        ("{not json", "JSON objects"),
        (json.dumps({"type": "request", "inputs": {"pixels": [10**400] * 64}}), "numbers"),
    ],
)
async def test_frames_that_broke_the_io_socket_get_an_error_frame(
    world, direct_cluster, frame, reason
):
    comm, connected, _ = await _connect(world.member, world.project, direct_cluster)
    assert connected
    await comm.receive_json_from()
    await comm.send_input({"type": "websocket.receive", "text": frame})  # "" too, as daphne does
    answer = await comm.receive_json_from()
    assert answer["type"] == "error" and reason in answer["error"]["message"], answer
    await comm.send_json_to({"type": "ping"})  # the socket stays open
    assert (await comm.receive_json_from())["type"] == "pong"
    await comm.disconnect()


async def test_a_nul_in_a_socket_path_is_not_found(world, direct_cluster):
    """PostgreSQL cannot compare a NUL: the lookup raised (a 500 at the handshake)."""
    token = await sync_to_async(lambda: token_pair_for(user=world.member)["access"])()
    for path in (
        f"/ws/projects/de\x00mo/clusters/{direct_cluster.pk}/io?token={token}",
        f"/ws/projects/{world.project.pk}/clusters/a\x00b/io?token={token}",
    ):
        comm = WebsocketCommunicator(_app(), path)
        connected, code = await comm.connect(timeout=10)
        assert (connected, code) == (False, 4404), path
