"""Fixtures of the export tests: the job engine's worker fixtures and demo datasets (shared with
tests/tasks), and helpers to call the export API and wait for an export to end."""

import pytest

from tests.tasks.conftest import (  # noqa: F401 (fixtures)
    digits,
    stub_broker,
    stub_worker,
    wait_for,
    wait_state,
)

TERMINAL = ("completed", "failed", "aborted")


def export_url(project, *parts) -> str:
    return "/".join([f"/api/export/{project.pk}", *parts])


def create_export(client, project, expect: int = 200, **body):
    response = client.post(export_url(project), body, format="json")
    assert response.status_code == expect, response.content
    return response.json()["data"] if expect == 200 else response.json()["error"]


def wait_export(client, project, export_id, timeout: float = 60.0) -> dict:
    """Poll the export's status through the API until it ends; returns its data."""

    def ended():
        data = client.get(export_url(project, export_id)).json()["data"]
        return data if data["status"] in TERMINAL else None

    return wait_for(ended, timeout)


@pytest.fixture
def api(world):
    from tests.conftest import client_for

    return client_for(world.member)
