"""The CUDA paths, on a machine with an NVIDIA GPU (skipped elsewhere): NVML listing, hosts,
a train and a request task on the gpu-0 queue, and direct io on a GPU-resident cluster."""

import dramatiq
import numpy as np
import pytest
import torch
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.accounts.services import token_pair_for
from apps.clusters.services import cluster_set_mode, cluster_switch_host, host_refresh
from tests.clusters.helpers import make_cluster
from tests.conftest import client_for
from tests.tasks.conftest import wait_state

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.django_db
def test_nvml_lists_the_gpu_and_hosts_follow(world):
    data = client_for(world.member).get("/api/system/devices").json()["data"]
    gpus = [d for d in data["devices"] if d["type"] == "gpu"]
    assert data["cuda_available"] is True and data["default_selected"] == ["gpu:0"]
    assert gpus and gpus[0]["id"] == "gpu:0" and gpus[0]["memory_total_mb"] > 1000
    assert gpus[0]["name"] == torch.cuda.get_device_name(0)
    hosts = {h.pk: h for h in host_refresh()}
    assert hosts["gpu-0"].kind == "gpu" and hosts["gpu-0"].state == "available"


@pytest.fixture
def gpu_worker():
    broker = dramatiq.get_broker()
    broker.flush_all()
    broker.declare_queue("gpu-0")
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=1)
    worker.start()
    yield worker
    worker.stop()
    broker.flush_all()


@pytest.mark.django_db(transaction=True)
def test_train_and_request_tasks_run_on_the_gpu_queue(world, gpu_worker):
    from apps.datasets.demo import create_demo_datasets
    from apps.datasets.models import Dataset

    create_demo_datasets(project=world.project, actor=world.owner)
    train_set = Dataset.objects.get(project=world.project, name="digits-train")
    test_set = Dataset.objects.get(project=world.project, name="digits-test")
    host_refresh()
    cluster = make_cluster(world.project, world.member)
    client = client_for(world.member)
    base = f"/api/projects/{world.project.pk}"
    r = client.put(f"{base}/clusters/{cluster.pk}/host", {"host_id": "gpu-0"}, format="json")
    assert r.status_code == 200, r.content

    def run(kind, dataset):
        body = {"name": kind, "kind": kind, "cluster_id": str(cluster.pk)}
        r = client.post(f"{base}/tasks", {**body, "dataset_id": str(dataset.pk)}, format="json")
        assert r.status_code == 201 and r.json()["data"]["queue"] == "gpu-0", r.content
        done = wait_state(r.json()["data"]["id"], timeout=120)
        assert done.state == "finished", (done.error, done.traceback)
        return done

    trained = run("train", train_set)
    assert trained.result["config"]["device"] in ("gpu:0", "cuda:0")
    request = run("request", test_set)
    r = client.post(
        f"{base}/results/{request.pk}/check", {"dataset_id": str(test_set.pk)}, format="json"
    )
    assert r.json()["data"]["accuracy"] > 95.0


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_direct_io_runs_on_the_gpu(world):
    def prepare():
        host_refresh()
        cluster = make_cluster(world.project, world.member)
        cluster = cluster_switch_host(cluster=cluster, host_id="gpu-0")
        cluster_set_mode(cluster=cluster, mode="DIRECT")
        return cluster, token_pair_for(user=world.member)["access"]

    from config.asgi import application

    cluster, token = await sync_to_async(prepare)()
    path = f"/ws/projects/{world.project.pk}/clusters/{cluster.pk}/io?token={token}"
    comm = WebsocketCommunicator(application, path)
    assert (await comm.connect(timeout=20))[0]
    await comm.receive_json_from(timeout=20)
    from apps.clusters.directio import runtime_get

    assert runtime_get(str(cluster.pk)).device.type == "cuda"
    x = np.random.default_rng(0).random(64, dtype=np.float32)
    y = np.zeros(10, np.float32)
    y[4] = 1.0
    for _ in range(40):
        await comm.send_to(bytes_data=b"T" + x.tobytes() + y.tobytes())
        await comm.receive_from(timeout=20)
    await comm.send_to(bytes_data=b"R" + x.tobytes())
    scores = np.frombuffer(await comm.receive_from(timeout=20), dtype="<f4")
    assert int(scores.argmax()) == 4
    await comm.disconnect()
