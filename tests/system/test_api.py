"""System endpoints: health checks the real database, broker and channel layer; devices answer
with the CPU alone when NVML is missing; workspace reports disk usage per visible project."""

import pytest
from rest_framework.test import APIClient

from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def test_health_checks_database_broker_and_channel_layer():
    response = APIClient().get("/api/system/health")
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["ok"] is True
    assert set(data["checks"]) == {"database", "broker", "channel_layer", "disk"}
    assert all(check["ok"] for check in data["checks"].values())


def test_health_reports_a_full_data_disk_as_503(settings):
    settings.HEALTH_MIN_FREE_BYTES = 1 << 62  # more than any disk has free
    response = APIClient().get("/api/system/health")
    assert response.status_code == 503
    assert "disk" in response.json()["error"]["message"]


def test_health_reports_a_broken_dependency_as_503(monkeypatch):
    from apps.system import selectors

    def broken():
        raise ConnectionError("broker down")

    monkeypatch.setattr(selectors, "_check_broker", broken)
    response = APIClient().get("/api/system/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and "broker" in body["error"]["message"]


def test_devices_lists_the_cpu_when_nvml_is_missing(world, monkeypatch):
    import pynvml

    def no_nvml():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_nvml)
    response = client_for(world.member).get("/api/system/devices")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["devices"][0] == {"id": "cpu", "name": "CPU", "type": "cpu"}
    assert data["default_selected"] == (["gpu:0"] if data["cuda_available"] else ["cpu"])
    assert set(data) >= {"devices", "cuda_available", "cuda_version", "default_selected"}


def test_devices_needs_authentication():
    assert APIClient().get("/api/system/devices").status_code == 401


def test_workspace_reports_usage_of_visible_projects_only(world, settings):
    from apps.core.storage import project_local_dir

    (project_local_dir(world.project.pk, "datasets") / "blob.bin").write_bytes(b"x" * 1234)
    data = client_for(world.member).get("/api/system/workspace").json()["data"]
    assert data["projects"] == {world.project.pk: 1234}
    assert data["disk_total_bytes"] >= data["disk_free_bytes"] > 0
    assert "data_dir" not in data
    admin = client_for(world.global_admin).get("/api/system/workspace").json()["data"]
    assert set(admin["projects"]) == {world.project.pk, world.other_project.pk}
