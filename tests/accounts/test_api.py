"""Projects, users and memberships through the main API, with the studio envelope."""

import re

import pytest
from rest_framework.test import APIClient

from apps.accounts.models import Membership, Project, User
from tests.conftest import client_for
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def test_create_project_answers_exactly_as_the_seed(world):
    response = client_for(world.member).post(
        "/api/projects",
        {"name": "My Classification Project", "task": "classification"},
        format="json",
    )
    assert response.status_code == 200  # the plan: 200 with the envelope
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["data"]) == {"id", "name", "task", "created_at"}
    assert re.fullmatch(r"proj-[0-9a-f]{12}", body["data"]["id"])
    assert body["data"]["created_at"].endswith("Z")
    membership = Membership.objects.get(project_id=body["data"]["id"], user=world.member)
    assert membership.is_project_admin


def test_list_shows_only_my_projects_paginated(world):
    # The plan answers the list itself; `X-Total-Count` says how many exist.
    r = client_for(world.member).get("/api/projects")
    assert [p["id"] for p in r.json()["data"]] == [world.project.pk]
    assert r["X-Total-Count"] == "1" and not r.has_header("Link")
    assert {
        p["id"] for p in client_for(world.global_admin).get("/api/projects").json()["data"]
    } == {
        world.project.pk,
        world.other_project.pk,
    }
    # Orchard's page object when a page is asked for.
    data = client_for(world.member).get("/api/projects?page=1").json()["data"]
    assert [p["id"] for p in data["items"]] == [world.project.pk]
    assert data["total"] == 1 and data["page"] == 1
    everything = client_for(world.global_admin).get("/api/projects?page_size=10").json()["data"]
    assert everything["total"] == 2


def test_the_plan_list_is_capped_and_says_so(world, settings):
    settings.PAGE_SIZE_MAX = 1
    r = client_for(world.global_admin).get("/api/projects")
    assert len(r.json()["data"]) == 1 and r["X-Total-Count"] == "2"
    assert r["Link"] == '</api/projects?page=2&page_size=1>; rel="next"'


@pytest.mark.parametrize(
    "task", ["object_detection", "segmentation", "anomaly_detection", "regression", "detection"]
)
def test_tasks_the_studio_cannot_train_are_refused(world, task):
    r = client_for(world.member).post("/api/projects", {"name": "p", "task": task}, format="json")
    assert r.status_code == 422, r.content
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "cannot be trained" in error["details"]["task"][0]
    r = client_for(world.owner).patch(
        f"/api/projects/{world.project.pk}", {"task": task}, format="json"
    )
    assert r.status_code == 422


def test_page_size_is_capped_and_validated(world, settings):
    client = client_for(world.global_admin)
    assert (
        client.get("/api/projects?page_size=100000").json()["data"]["page_size"]
        == settings.PAGE_SIZE_MAX
    )
    bad = client.get("/api/projects?page=zero")
    assert bad.status_code == 422
    assert bad.json()["error"]["details"] == {"page": ["must be a positive integer."]}
    assert client.get("/api/projects?page=99").json()["data"]["items"] == []


def test_patch_and_delete_need_a_project_admin(world):
    url = f"/api/projects/{world.project.pk}"
    assert client_for(world.member).patch(url, {"name": "x"}, format="json").status_code == 403
    response = client_for(world.owner).patch(url, {"name": "Renamed"}, format="json")
    assert response.status_code == 200 and response.json()["data"]["name"] == "Renamed"
    assert client_for(world.viewer).delete(url).status_code == 403
    deleted = client_for(world.owner).delete(url)
    assert deleted.status_code == 200 and deleted.json()["data"] == {
        "id": world.project.pk,
        "deleted": True,
    }
    assert not Project.objects.filter(pk=world.project.pk).exists()


def test_unknown_fields_wrong_values_and_missing_fields_are_validation_errors(world):
    client = client_for(world.member)
    unknown = client.post("/api/projects", {"name": "a", "owner": "mallory"}, format="json")
    assert unknown.status_code == 422
    assert unknown.json()["error"]["details"] == {"owner": ["Unknown field."]}
    wrong = client.post("/api/projects", {"name": "a", "task": "telepathy"}, format="json")
    assert wrong.status_code == 422 and "task" in wrong.json()["error"]["details"]
    missing = client.post("/api/projects", {}, format="json")
    assert missing.json()["error"]["code"] == "VALIDATION_ERROR"
    not_object = client.post("/api/projects", [1, 2], format="json")
    assert not_object.status_code == 422
    assert Project.objects.count() == 2


def test_malformed_json_is_a_validation_error(world):
    response = client_for(world.member).generic(
        "POST", "/api/projects", '{"name": "x",', content_type="application/json"
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert "JSON" in response.json()["error"]["message"]


def test_unknown_routes_and_methods_answer_in_the_envelope(world):
    client = client_for(world.member)
    assert client.get("/api/projects/proj-000000000000").json()["error"]["code"] == "NOT_FOUND"
    put = client.put(f"/api/projects/{world.project.pk}", {}, format="json")
    assert put.status_code == 405 and put.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    # HEAD answers as GET does (no body), as on every other route; OPTIONS describes the route.
    for path in ("/api/projects", f"/api/projects/{world.project.pk}"):
        head = client.head(path)
        assert (head.status_code, head.content) == (200, b""), path
        assert client.options(path).status_code == 200, path


def test_service_accounts_cannot_create_projects(world):
    robot = make_user("robot", is_service_account=True)
    response = client_for(robot).post("/api/projects", {"name": "x"}, format="json")
    assert response.status_code == 403


def test_global_admin_manages_users_with_password_validation(world):
    admin = client_for(world.global_admin)
    weak = admin.post("/api/users", {"username": "dave", "password": "123"}, format="json")
    assert weak.status_code == 422 and "password" in weak.json()["error"]["details"]
    created = admin.post(
        "/api/users",
        {"username": "dave", "password": "a-long-enough-passphrase", "name": "Dave"},
        format="json",
    )
    assert created.status_code == 201 and created.json()["data"]["is_admin"] is False
    duplicate = admin.post(
        "/api/users", {"username": "dave", "password": "another-long-passphrase"}, format="json"
    )
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "CONFLICT"
    assert admin.patch("/api/users/dave", {"is_admin": True}, format="json").json()["data"][
        "is_admin"
    ]
    assert admin.delete("/api/users/dave").status_code == 204
    assert not User.objects.filter(username="dave").exists()
    assert admin.delete("/api/users/root").status_code == 409  # not yourself
    assert client_for(world.owner).get("/api/users").status_code == 403


def test_project_admins_manage_members(world):
    url = f"/api/projects/{world.project.pk}/members"
    newcomer = make_user("erin")
    assert (
        client_for(world.member).post(url, {"username": "erin"}, format="json").status_code == 403
    )
    added = client_for(world.owner).post(url, {"username": "erin", "role": "viewer"}, format="json")
    assert added.status_code == 201 and added.json()["data"]["role"] == "viewer"
    listed = client_for(world.viewer).get(url).json()["data"]
    assert {m["username"] for m in listed["items"]} == {"alice", "bob", "carol", "erin"}
    promoted = client_for(world.owner).patch(f"{url}/erin", {"role": "member"}, format="json")
    assert promoted.json()["data"]["role"] == "member"
    assert client_for(world.owner).delete(f"{url}/erin").status_code == 204
    assert not Membership.objects.filter(user=newcomer).exists()
    ghost = client_for(world.owner).post(url, {"username": "nobody"}, format="json")
    assert ghost.status_code == 404


def test_removed_members_lose_access_at_once(world):
    client = client_for(world.member)
    assert client.get(f"/api/projects/{world.project.pk}").status_code == 200
    Membership.objects.filter(user=world.member).delete()
    assert client.get(f"/api/projects/{world.project.pk}").status_code == 404


def test_openapi_schema_and_docs_are_served_locally():
    client = APIClient()
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/projects" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "drf_spectacular_sidecar" in html and "cdn" not in html.lower()
    asset = re.search(r'src="([^"]+swagger-ui-bundle\.js)"', html).group(1)
    assert client.get(asset).status_code == 200
    assert client.get("/api/redoc/").status_code == 200
