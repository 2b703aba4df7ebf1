"""Memberships and project quota (issue #13, findings 4 and 5).

Before, POSTing an existing member silently changed their role (a fuzzer left a project with no
admin), the last admin of a project could be demoted or removed, and a user could create
projects without bound.
"""

import pytest

from apps.accounts.models import Membership, Project, User
from apps.core.tenancy import Role
from tests.conftest import client_for
from tests.factories import PASSWORD, add_member, make_project, make_user
from tests.hanami.conftest import SDK, token_for

pytestmark = pytest.mark.django_db


def _members(world):
    return f"/api/projects/{world.project.pk}/members"


def _role(project, user):
    m = Membership.objects.get(project=project, user=user)
    return (m.role, m.is_project_admin)


def _conflict(response, *words):
    assert response.status_code == 409, response.content
    body = response.json()
    if "status" in body:  # the main API's envelope
        assert body["status"] == "error" and body["error"]["code"] == "CONFLICT"
        message = body["error"]["message"]
    else:  # Hanami's {"error": ...}
        message = body["error"]
    for word in words:
        assert word in message, message


def test_posting_an_existing_member_is_a_conflict_not_a_role_change(world):
    admin = client_for(world.owner)
    before = _role(world.project, world.member)
    response = admin.post(
        _members(world), {"username": world.member.username, "role": "viewer"}, format="json"
    )
    _conflict(response, "already a member")
    assert _role(world.project, world.member) == before
    # The project's own admin re-adding themselves as a viewer (the fuzzer's case) too.
    response = admin.post(
        _members(world), {"username": world.owner.username, "role": "viewer"}, format="json"
    )
    _conflict(response, "already a member")
    assert _role(world.project, world.owner) == (Role.ADMIN, True)


def test_the_last_admin_cannot_be_demoted_or_removed(world):
    admin = client_for(world.owner)
    url = f"{_members(world)}/{world.owner.username}"
    demoted = admin.patch(url, {"role": "member", "is_project_admin": False}, format="json")
    _conflict(demoted, "last admin")
    _conflict(admin.delete(url), "last admin")
    assert _role(world.project, world.owner) == (Role.ADMIN, True)

    # With a second admin, the first may step down.
    admin.patch(
        f"{_members(world)}/{world.member.username}",
        {"role": "admin", "is_project_admin": True},
        format="json",
    )
    stepped_down = admin.patch(url, {"role": "member", "is_project_admin": False}, format="json")
    assert stepped_down.status_code == 200
    # ... and now the second one is the last.
    _conflict(client_for(world.member).delete(f"{_members(world)}/bob"), "last admin")


def test_deleting_or_deactivating_the_last_admin_is_a_conflict(world):
    root = client_for(world.global_admin)
    _conflict(root.delete(f"/api/users/{world.owner.username}"), "last admin", world.project.pk)
    deactivate = root.patch(
        f"/api/users/{world.owner.username}", {"is_active": False}, format="json"
    )
    _conflict(deactivate, "last admin")
    owner = User.objects.get(pk=world.owner.pk)
    assert owner.is_active and Membership.objects.filter(user=owner).count() == 1
    # A user who administers no project with other members may go.
    assert root.delete(f"/api/users/{world.member.username}").status_code == 204


def test_hanami_membership_routes_keep_the_same_rules(world):
    team = make_project(world.owner, name="Team", project_id="team")  # Hanami-style id
    add_member(team, world.member, Role.MEMBER)
    admin = SDK(token_for("root", PASSWORD))
    body = {"id": "bob", "project_id": "team", "role": "viewer"}
    _conflict(admin.post("user/project", body), "already a member")
    assert _role(team, world.member) == (Role.MEMBER, False)
    _conflict(admin.delete("user/project", project_id="team", id="alice"), "last admin")
    _conflict(admin.delete("user", id="alice"), "last admin")
    assert Membership.objects.filter(project=team, user=world.owner).exists()


def test_projects_per_user_are_limited(world, settings):
    settings.PROJECTS_MAX_PER_USER = 3
    client = client_for(world.member)
    make_project(world.member, name="one")
    make_project(world.member, name="two")
    assert client.post("/api/projects", {"name": "three"}, format="json").status_code == 200
    before = Project.objects.count()
    refused = client.post("/api/projects", {"name": "four"}, format="json")
    assert refused.status_code == 413, refused.content
    error = refused.json()["error"]
    assert "PROJECTS_MAX_PER_USER" in error["message"] and "3" in error["message"]
    assert Project.objects.count() == before  # nothing half-created
    assert not Membership.objects.filter(project__name="four").exists()

    # Being a member of many projects does not count, nor do global admins.
    for n in range(4):
        add_member(make_project(world.global_admin, name=f"root-{n}"), world.member, Role.MEMBER)
    settings.PROJECTS_MAX_PER_USER = 1
    root = client_for(world.global_admin)
    assert root.post("/api/projects", {"name": "admin-1"}, format="json").status_code == 200
    assert root.post("/api/projects", {"name": "admin-2"}, format="json").status_code == 200
    newcomer = make_user("erin")
    assert (
        client_for(newcomer).post("/api/projects", {"name": "e"}, format="json").status_code == 200
    )
