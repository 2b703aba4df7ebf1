"""Team mode through its real processes: daphne + two orchard_worker processes on PostgreSQL and
Redis, driven only over HTTP and websockets (see conftest.py). Every wait is on an answer or an
event, bounded; nothing here depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket

import numpy as np
import pytest
import websockets

from apps.datasets.idx import idx_bytes
from tests.clusters.helpers import DIGITS_TEMPLATE
from tests.deployed.conftest import wait_until

pytestmark = [pytest.mark.services, pytest.mark.slow]

IDLE_S = float(os.environ.get("DEPLOYED_IDLE_S", "61"))


def demo(team) -> tuple[str, dict]:
    """The demo project `bootstrap` made, and its datasets by name."""
    projects = team.ok(team.get("/api/projects"))  # the plan's list
    project = next(p for p in projects if p["name"].lower() == "demo")["id"]
    datasets = team.ok(team.get(f"/api/projects/{project}/datasets"))["items"]
    return project, {d["name"]: d["id"] for d in datasets}


def new_cluster(team, project: str, name: str) -> str:
    r = team.post(f"/api/projects/{project}/clusters", {"name": name, "template": DIGITS_TEMPLATE})
    return team.ok(r, 201)["id"]


def submit(team, project, kind, cluster, dataset, **params) -> str:
    body = {"name": kind, "kind": kind, "cluster_id": cluster, "dataset_id": dataset}
    r = team.post(f"/api/projects/{project}/tasks", {**body, "params": params})
    return team.ok(r, 201)["id"]


def task(team, project, task_id) -> dict:
    return team.ok(team.get(f"/api/projects/{project}/tasks/{task_id}"))


def wait_task(team, project, task_id, timeout=300) -> dict:
    return wait_until(
        lambda: (
            (t := task(team, project, task_id))["state"] in ("finished", "failed", "aborted") and t
        ),
        timeout=timeout,
        what=f"task {task_id} to end",
        interval=0.2,
    )


async def events_until(team, project, task_id, stop, timeout=300) -> list[dict]:
    """Task websocket events until `stop(event)` is true (or the socket closes)."""
    seen = []
    url = team.ws_url(f"/ws/projects/{project}/tasks/{task_id}")
    async with websockets.connect(url, open_timeout=30, max_size=None) as ws:
        async with asyncio.timeout(timeout):
            async for raw in ws:
                event = json.loads(raw)
                seen.append(event)
                if stop(event):
                    break
    return seen


def training_past(team, name: str, epoch: int, **params) -> tuple[str, str, str]:
    """A train task of a new cluster on digits-train, once its task websocket reported `epoch`:
    (project, cluster, task id)."""
    project, datasets = demo(team)
    cluster = new_cluster(team, project, name)
    train = submit(team, project, "train", cluster, datasets["digits-train"], **params)
    asyncio.run(
        events_until(
            team, project, train, lambda e: e.get("type") == "epoch" and e["epoch"] >= epoch
        )
    )
    return project, cluster, train


def test_static_admin_and_docs_answer(team):
    """The README's steps collect static files: the admin and the API docs render (500 before)."""
    for path in ("/admin/login/", "/api/docs/", "/api/redoc/"):
        r = team.get(path)
        assert r.status_code == 200, (path, r.status_code)
    css = team.get("/static/admin/css/base.css")
    assert css.status_code == 200 and b"body" in css.content


def test_train_and_request_through_the_workers(team):
    project, datasets = demo(team)
    cluster = new_cluster(team, project, "deployed-net")
    train = submit(team, project, "train", cluster, datasets["digits-train"], epochs=15)
    events = asyncio.run(
        events_until(team, project, train, lambda e: e.get("state") in ("finished", "failed"))
    )
    assert events[-1]["state"] == "finished", events[-3:]
    assert any(e["type"] == "epoch" for e in events)
    request = submit(team, project, "request", cluster, datasets["digits-test"])
    assert wait_task(team, project, request)["state"] == "finished"
    r = team.post(
        f"/api/projects/{project}/results/{request}/check", {"dataset_id": datasets["digits-test"]}
    )
    assert team.ok(r)["accuracy"] >= 90.0


def test_a_websocket_idle_past_a_minute_stays_open(team):
    """Through the Redis channel layer: redis-py 8's 5 s default read timeout closed every idle
    socket with 1011 after ~5 s."""
    project, datasets = demo(team)
    cluster = new_cluster(team, project, "idle-net")
    done = submit(team, project, "request", cluster, datasets["digits-test"])
    wait_task(team, project, done)

    async def idle_then_ping():
        url = team.ws_url(f"/ws/projects/{project}/tasks/{done}")
        async with websockets.connect(url, open_timeout=30, ping_interval=None) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert first["type"] == "state"
            with pytest.raises(TimeoutError):  # nothing arrives, and nothing breaks
                while True:
                    await asyncio.wait_for(ws.recv(), IDLE_S)
            await ws.send(json.dumps({"type": "ping"}))
            while (msg := json.loads(await asyncio.wait_for(ws.recv(), 30)))["type"] != "pong":
                pass
            return msg

    assert asyncio.run(idle_then_ping()) == {"type": "pong"}


def test_sigkilled_worker_mid_training_resumes_from_its_checkpoint_once(team):
    epochs = 30
    project, cluster, train = training_past(team, "kill-net", 3, epochs=epochs, batch_size=8)
    for proc in team.live_workers():  # whichever worker holds it dies without a word
        team.stop(proc, signal.SIGKILL)
    assert task(team, project, train)["state"] == "active"
    for _ in range(2):
        team.start_worker("--reap-every", "0.5")
    done = wait_task(team, project, train)
    assert done["state"] == "finished", done["error"]
    assert done["attempts"] == 2
    # The kill may land between epoch 3's event and its checkpoint: at most that epoch is redone.
    assert done["result"]["resumed_from_epoch"] >= 2
    assert done["result"]["epochs_completed"] == epochs
    cluster_row = team.ok(team.get(f"/api/projects/{project}/clusters/{cluster}"))
    assert cluster_row["version"] == 1  # the weights were stored exactly once


def _put_chunk(team, project, upload, position, data) -> dict:
    import requests

    r = requests.put(
        team.url(f"/api/projects/{project}/uploads/{upload}?position={position}"),
        data=data,
        headers={**team.headers(), "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    return team.ok(r)


def test_daphne_killed_mid_upload_the_client_resumes(team):
    """SIGKILL of the server while a chunk is on the wire: after the restart the upload's progress
    says what arrived whole, the client sends the rest, and the dataset holds exactly the file."""
    project, _ = demo(team)
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(3000, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=3000, dtype=np.uint8)
    payloads = {"images": idx_bytes(images), "labels": idx_bytes(labels)}
    uploads = {}
    for role, payload in payloads.items():
        r = team.post(
            f"/api/projects/{project}/uploads", {"filename": f"{role}.idx", "size": len(payload)}
        )
        uploads[role] = team.ok(r, 201)["id"]
    _put_chunk(team, project, uploads["labels"], 0, payloads["labels"])
    data = payloads["images"]
    chunk = 512 * 1024
    assert _put_chunk(team, project, uploads["images"], 0, data[:chunk])["received_bytes"] == chunk

    # A second chunk half sent, then the server dies.
    host, port = team.base.removeprefix("http://").split(":")
    raw = socket.create_connection((host, int(port)))
    head = (
        f"PUT /api/projects/{project}/uploads/{uploads['images']}?position={chunk} HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {team.token}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {chunk}\r\n\r\n"
    )
    raw.sendall(head.encode() + data[chunk : chunk + chunk // 2])
    team.stop(team.server, signal.SIGKILL)
    raw.close()
    team.start_server()

    progress = team.ok(team.get(f"/api/projects/{project}/uploads/{uploads['images']}"))
    position = progress["received_bytes"]
    assert position == chunk  # the torn chunk left nothing behind
    while position < len(data):
        position = _put_chunk(
            team, project, uploads["images"], position, data[position : position + chunk]
        )["received_bytes"]
    r = team.post(
        f"/api/projects/{project}/datasets/from-uploads",
        {"name": "resumed-upload", "kind": "mnist", "uploads": uploads},
    )
    dataset = team.ok(r, 201)
    dataset = wait_until(
        lambda: (
            (d := team.ok(team.get(f"/api/projects/{project}/datasets/{dataset['id']}")))["status"]
            in ("ready", "failed")
            and d
        ),
        timeout=120,
        what="the dataset to be ready",
    )
    assert dataset["status"] == "ready", dataset
    assert dataset["num_samples"] == len(images)
    # What was stored is exactly what was sent (the pixels are kept as the idx file's uint8).
    stored = next(team.data_dir.rglob(f"{dataset['id']}/labels.npy"))
    assert np.array_equal(np.load(stored), labels.astype(np.int64))
    inputs = np.load(stored.with_name("inputs.npy"), mmap_mode="r")
    expected = images.reshape(len(images), -1)
    assert inputs.dtype == np.uint8 and np.array_equal(inputs, expected)


def test_sigterm_to_a_worker_requeues_its_task_at_once_and_it_resumes(team):
    epochs = 30
    project, _, train = training_past(team, "term-net", 3, epochs=epochs, batch_size=8)
    # A deploy restarts the workers: SIGTERM to all at once, then new ones. (One at a time let the
    # holder train on through the idle one's seconds-long shutdown, and finish, on a fast machine.)
    workers = team.live_workers()
    team.stop_all(workers, signal.SIGTERM)
    assert [proc.returncode for proc in workers] == [0] * len(workers)
    row = task(team, project, train)
    assert (row["state"], row["attempts"], row["error"]) == ("queued", 0, "")
    for _ in range(2):
        team.start_worker("--reap-every", "0.5")
    done = wait_task(team, project, train)
    assert done["state"] == "finished", done["error"]
    assert done["attempts"] == 1  # the interrupted attempt was not counted
    assert done["result"]["resumed_from_epoch"] >= 3
    assert done["result"]["epochs_completed"] == epochs


def test_a_task_whose_broker_message_was_lost_still_runs(team):
    """Broker data loss (a Redis flush, a lost queue) while no worker is up: the sweeper sends
    the queued task again (it waited for ever, and blocked its cluster, before)."""
    import redis

    project, datasets = demo(team)
    cluster = new_cluster(team, project, "lost-net")
    for proc in team.live_workers():
        team.stop(proc, signal.SIGTERM)
    first = submit(team, project, "request", cluster, datasets["digits-test"])
    second = submit(team, project, "request", cluster, datasets["digits-test"])
    if team.env["BROKER_URL"].startswith("redis"):
        redis.Redis.from_url(team.env["BROKER_URL"]).flushdb()  # the messages are gone
    else:
        pytest.skip("this deployment's broker is RabbitMQ")
    for _ in range(2):
        team.start_worker("--reap-every", "0.5")
    for task_id in (first, second):  # the second waited behind the first: both run
        assert wait_task(team, project, task_id)["state"] == "finished"


def test_database_connections_dropped_mid_training_lose_no_work(team):
    """Every server-side database connection of the deployment is terminated while a task
    trains (a PostgreSQL restart or failover): the heartbeats reconnect and the task finishes."""
    import psycopg

    project, _, train = training_past(team, "drop-net", 2, epochs=25)
    db = urlparse_db(team.env["DATABASE_URL"])
    with psycopg.connect(db["server"] + "/postgres", autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (db["name"],),
        ).fetchone()[0]
    assert killed >= 1
    done = wait_task(team, project, train)
    assert done["state"] == "finished", done["error"]
    assert done["result"]["epochs_completed"] == 25
    assert team.healthy()


def urlparse_db(url: str) -> dict:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    server = f"{parsed.scheme}://{parsed.netloc}"
    return {"server": server, "name": parsed.path.lstrip("/")}


def _sse_events(team, path: str, timeout: float = 300) -> list[tuple[str, dict]]:
    """Named SSE events of a run's stream, read over HTTP until the server ends the stream."""
    import requests

    events, name = [], None
    with requests.get(team.url(path), headers=team.headers(), stream=True, timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                name = line.partition(":")[2].strip()
            elif line.startswith("data:") and name:
                events.append((name, json.loads(line.partition(":")[2])))
                name = None
    return events


def test_a_studio_run_streams_over_sse_then_exports_and_downloads(team):
    import onnx
    import onnxruntime

    project, datasets = demo(team)
    experiment = team.ok(
        team.post(
            f"/api/training/{project}/experiments",
            {
                "name": "deployed",
                "dataset_id": datasets["digits-train"],
                "architecture": "mlp",
                "input_size": [64],
                "batch_size": 64,
                "epochs": 3,
            },
        ),
    )
    run = team.ok(team.post(f"/api/training/{project}/experiments/{experiment['id']}/run"))
    events = _sse_events(team, f"/api/training/{project}/runs/{run['run_id']}/stream")
    names = [name for name, _ in events]
    assert names.count("epoch_end") == 3 and names[-1] == "complete", names
    last = [data for name, data in events if name == "epoch_end"][-1]  # the plan's payload
    assert (last["epoch"], last["max_epochs"]) == (3, 3) and "train_loss" in last["metrics"]
    export = team.ok(
        team.post(
            f"/api/export/{project}",
            {
                "experiment_id": experiment["id"],
                "run_id": run["run_id"],
                "checkpoint": "best",
                "format": "onnx",
            },
        ),
    )
    done = wait_until(
        lambda: (
            (e := team.ok(team.get(f"/api/export/{project}/{export['id']}")))["status"]
            in ("completed", "failed")
            and e
        ),
        timeout=300,
        what="the export",
    )
    assert done["status"] == "completed" and done["validation"]["passed"], done
    r = team.get(done["download_url"])
    assert r.status_code == 200 and len(r.content) == done["size_bytes"]
    model = onnx.load_from_string(r.content)
    onnx.checker.check_model(model)
    session = onnxruntime.InferenceSession(r.content, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 64), np.float32)})
    assert out[0].shape[0] == 2


def test_direct_io_over_the_deployed_server(team):
    """A cluster in DIRECT mode answers binary request and train frames over its io socket, and
    its trained weights are written back when it returns to TASK mode."""
    project, _ = demo(team)
    cluster = new_cluster(team, project, "direct-net")
    mode = f"/api/projects/{project}/clusters/{cluster}/mode"
    team.ok(requests_put(team, mode, {"mode": "DIRECT"}))
    rng = np.random.default_rng(3)
    inputs = rng.random((4, 64), dtype=np.float32)
    targets = np.eye(10, dtype=np.float32)[[1, 2, 3, 4]]

    async def talk():
        url = team.ws_url(f"/ws/projects/{project}/clusters/{cluster}/io")
        async with websockets.connect(url, open_timeout=60, max_size=None) as ws:
            ready = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert ready["type"] == "ready" and ready["can_train"] is True
            await ws.send(b"R" + inputs.tobytes())
            scores = np.frombuffer(await asyncio.wait_for(ws.recv(), 60), np.float32)
            losses = []
            for _ in range(20):
                await ws.send(b"T" + inputs.tobytes() + targets.tobytes())
                losses.append(np.frombuffer(await asyncio.wait_for(ws.recv(), 60), np.float32))
            return scores, losses

    scores, losses = asyncio.run(talk())
    assert scores.shape == (40,) and np.allclose(scores.reshape(4, 10).sum(axis=1), 1, atol=1e-4)
    assert losses[-1][0] < losses[0][0]  # it learns, one step per frame
    team.ok(requests_put(team, mode, {"mode": "TASK"}))
    assert team.ok(team.get(f"/api/projects/{project}/clusters/{cluster}"))["version"] >= 1


def requests_put(team, path, body):
    import requests

    return requests.put(team.url(path), json=body, headers=team.headers(), timeout=60)


UPLOAD_S = float(os.environ.get("DEPLOYED_UPLOAD_S", "61"))


def test_a_slow_hanami_socket_upload_lasting_past_a_minute_completes(team):
    """The Hanami SDK's MNIST upload over the `/` websocket, sent slowly enough to last past a
    minute on the Redis layer (a 47 MB upload died after 6.4 s with redis-py 8's read timeout and
    left its dataset 'uploading'); then finalized and read back through the gateway."""
    import requests

    from apps.hanami.proto.messages import FileUpload_Message, FileUploadResponse_Message

    def hanami(method, path, body=None, token=None, **params):
        headers = {"X-Auth-Token": token} if token else {}
        data = json.dumps(body) if body is not None else ""
        return requests.request(
            method,
            team.url(f"/control/v1/{path}"),
            data=data,
            params=params,
            headers=headers,
            timeout=60,
        )

    from bench.deployment import ADMIN_PASSWORD

    token = hanami("POST", "token", {"id": "admin", "password": ADMIN_PASSWORD}).json()["token"]
    rng = np.random.default_rng(11)
    images = idx_bytes(rng.integers(0, 256, size=(8000, 8, 8), dtype=np.uint8))
    labels = idx_bytes(rng.integers(0, 10, size=8000, dtype=np.uint8))
    r = hanami(
        "POST",
        "mnist/dataset",
        {"name": "slow-upload", "input_data_size": len(images), "label_data_size": len(labels)},
        token,
    )
    assert r.status_code == 200, r.text
    created = r.json()
    chunk = 16 * 1024

    async def upload(file_uuid: str, payload: bytes, seconds: float):
        async with websockets.connect(
            team.base.replace("http://", "ws://") + "/", open_timeout=30, ping_interval=None
        ) as ws:
            await ws.send(json.dumps({"token": token, "target": "file_upload", "uuid": file_uuid}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["success"] is True
            positions = range(0, len(payload), chunk)
            pause = seconds / max(1, len(positions))
            for position in positions:
                message = FileUpload_Message(
                    position=position, data=payload[position : position + chunk]
                )
                await ws.send(message.SerializeToString())
                answer = FileUploadResponse_Message.FromString(
                    await asyncio.wait_for(ws.recv(), 30)
                )
                assert answer.success, answer.errorMessage
                await asyncio.sleep(pause)  # a slow client: the point of this test

    asyncio.run(upload(created["uuid_input_file"], images, UPLOAD_S))
    asyncio.run(upload(created["uuid_label_file"], labels, 0))
    r = hanami(
        "PUT",
        "mnist/dataset",
        {k: created[k] for k in ("uuid", "uuid_input_file", "uuid_label_file")},
        token,
    )
    assert r.status_code == 200, r.text
    got = hanami("GET", "dataset", token=token, uuid=created["uuid"]).json()
    assert (got["lines"], got["inputs"], got["type"]) == (8000, 64, "mnist")
