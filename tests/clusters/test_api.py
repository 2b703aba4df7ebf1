"""Clusters, checkpoints and hosts through the main API."""

import pytest

from apps.clusters.models import Cluster
from apps.tasks.models import Task, target_of
from tests.clusters.helpers import DIGITS_TEMPLATE, make_cluster, template
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def _url(project, *parts):
    return "/".join([f"/api/projects/{project.pk}", *parts])


def test_create_list_get_delete(world):
    client = client_for(world.member)
    r = client.post(
        _url(world.project, "clusters"), {"name": "net", "template": DIGITS_TEMPLATE}, format="json"
    )
    assert r.status_code == 201, r.content
    cluster = r.json()["data"]
    assert cluster["shape"]["inputs"] == {"pixels": 64}
    assert cluster["shape"]["outputs"] == {"digit": 10}
    assert cluster["mode"] == "TASK" and cluster["host_id"] == "cpu" and cluster["version"] == 0

    listed = client.get(_url(world.project, "clusters")).json()["data"]
    assert [c["id"] for c in listed["items"]] == [cluster["id"]]
    assert client.get(_url(world.project, "clusters", cluster["id"])).status_code == 200
    assert client.delete(_url(world.project, "clusters", cluster["id"])).status_code == 204
    assert not Cluster.objects.filter(pk=cluster["id"]).exists()


def test_invalid_template_names_the_line(world):
    bad = DIGITS_TEMPLATE.replace("number_of_neurons: 128", "number_of_neurons: lots")
    r = client_for(world.member).post(
        _url(world.project, "clusters"), {"name": "net", "template": bad}, format="json"
    )
    assert r.status_code == 422
    assert "line 9" in r.json()["error"]["message"]


def test_viewer_cannot_create(world):
    r = client_for(world.viewer).post(
        _url(world.project, "clusters"), {"name": "n", "template": DIGITS_TEMPLATE}, format="json"
    )
    assert r.status_code == 403


def test_mode_switch_refused_with_pending_tasks(world):
    cluster = make_cluster(world.project, world.owner)
    client = client_for(world.owner)
    url = _url(world.project, "clusters", str(cluster.pk), "mode")
    assert client.put(url, {"mode": "DIRECT"}, format="json").json()["data"]["mode"] == "DIRECT"
    assert client.put(url, {"mode": "TASK"}, format="json").status_code == 200
    Task.objects.create(project=world.project, kind="train", name="t", **target_of(cluster))
    r = client.put(url, {"mode": "DIRECT"}, format="json")
    assert r.status_code == 409
    assert client.put(url, {"mode": "SIDEWAYS"}, format="json").status_code == 422


def test_switch_host(world):
    cluster = make_cluster(world.project, world.owner)
    client = client_for(world.owner)
    url = _url(world.project, "clusters", str(cluster.pk), "host")
    assert client.put(url, {"host_id": "cpu"}, format="json").status_code == 200
    assert client.put(url, {"host_id": "gpu-99"}, format="json").status_code == 404


def test_hosts_list(world):
    r = client_for(world.viewer).get("/api/hosts")
    assert r.status_code == 200
    assert "cpu" in [h["id"] for h in r.json()["data"]]
    assert client_for(None).get("/api/hosts").status_code == 401


def test_checkpoint_save_restore_delete(world):
    client = client_for(world.owner)
    source = make_cluster(world.project, world.owner, seed=1)
    target = make_cluster(world.project, world.owner, name="twin", seed=2)
    other_shape = make_cluster(world.project, world.owner, name="wide", text=template(hidden=32))

    r = client.post(_url(world.project, "clusters", str(source.pk), "checkpoints"), {"name": "cp1"})
    assert r.status_code == 201, r.content
    checkpoint = r.json()["data"]
    assert checkpoint["cluster_id"] == str(source.pk)
    assert checkpoint["metadata"]["shape"]["inputs"] == {"pixels": 64}
    assert checkpoint["metadata"]["template"] == DIGITS_TEMPLATE
    listed = client.get(_url(world.project, "checkpoints")).json()["data"]["items"]
    assert [c["id"] for c in listed] == [checkpoint["id"]]

    restore = _url(world.project, "checkpoints", checkpoint["id"], "restore")
    r = client.post(restore, {"cluster_id": str(target.pk)}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["data"]["version"] == 1

    from apps.clusters.runtime import cluster_load_model

    a = cluster_load_model(source).state_dict()
    b = cluster_load_model(Cluster.objects.get(pk=target.pk)).state_dict()
    assert all((a[k] == b[k]).all() for k in a)

    r = client.post(restore, {"cluster_id": str(other_shape.pk)}, format="json")
    assert r.status_code == 422
    assert "projections" in r.json()["error"]["message"]

    foreign = make_cluster(world.other_project, world.outsider)
    r = client.post(restore, {"cluster_id": str(foreign.pk)}, format="json")
    assert r.status_code == 422

    assert client.delete(_url(world.project, "checkpoints", checkpoint["id"])).status_code == 204
    assert client.get(_url(world.project, "checkpoints", checkpoint["id"])).status_code == 404


def test_checkpoint_survives_cluster_delete(world):
    client = client_for(world.owner)
    cluster = make_cluster(world.project, world.owner)
    r = client.post(_url(world.project, "clusters", str(cluster.pk), "checkpoints"), {"name": "c"})
    checkpoint_id = r.json()["data"]["id"]
    client.delete(_url(world.project, "clusters", str(cluster.pk)))
    r = client.get(_url(world.project, "checkpoints", checkpoint_id))
    assert r.status_code == 200 and r.json()["data"]["cluster_id"] is None


def test_host_refresh_maps_device_ids(world, monkeypatch):
    import ml.devices
    from apps.clusters.models import Host
    from apps.clusters.services import host_refresh

    devices = [
        {"id": "cpu", "name": "CPU", "type": "cpu"},
        {"id": "gpu:0", "name": "H100", "type": "gpu", "memory_total_mb": 80000},
    ]
    monkeypatch.setattr(ml.devices, "list_devices", lambda: {"devices": devices})
    host_refresh()
    gpu = Host.objects.get(pk="gpu-0")
    assert gpu.kind == "gpu" and gpu.memory_bytes == 80000 * 1024 * 1024
    assert gpu.state == "available"
    devices.pop()
    host_refresh()
    assert Host.objects.get(pk="gpu-0").state == "unavailable"
