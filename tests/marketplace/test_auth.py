"""Who may call the orchestrator: Basic credentials of Orchard accounts (or a studio JWT), the
project each request works in, and the compute-only routes."""

import pytest

from apps.accounts.models import Project
from apps.core.tenancy import Role
from tests.conftest import client_for
from tests.factories import PASSWORD, add_member, make_project, make_user
from tests.marketplace.conftest import ZERO_UUID, Orchestrator, new_uuid

pytestmark = pytest.mark.django_db


def _first(orch, market):
    return orch.learnuplets(algo=market["algo"])[0]["uuid"]


def test_credentials_are_required_and_checked(world, market):
    for orch in (
        Orchestrator(),
        Orchestrator(world.owner.username, "wrong-password"),
        Orchestrator(headers={"HTTP_AUTHORIZATION": "Basic !!!not-base64"}),
        Orchestrator("nobody"),
    ):
        r = orch.get("problem")
        assert r.status_code == 401 and set(r.json()) == {"Error"}
        assert r["WWW-Authenticate"] == 'Basic realm="orchestrator"'
    world.member.is_active = False
    world.member.save()
    assert Orchestrator(world.member.username).get("problem").status_code == 401


def test_a_changed_password_is_noticed_despite_the_credentials_cache(world, settings):
    settings.MARKETPLACE_BASIC_AUTH_CACHE_S = 60
    orch = Orchestrator(world.owner.username)
    assert orch.get("problem").status_code == 200
    assert orch.get("problem").status_code == 200  # served from the cache
    world.owner.set_password("another-long-password-77")
    world.owner.save()
    assert orch.get("problem").status_code == 401
    assert (
        Orchestrator(world.owner.username, "another-long-password-77").get("problem").status_code
        == 200
    )


def test_roles_viewers_read_members_write_compute_routes_need_a_compute_account(
    world, market, compute_orch
):
    viewer, member = Orchestrator(world.viewer.username), Orchestrator(world.member.username)
    assert viewer.get("learnuplet").status_code == 200
    r = viewer.post(
        "problem",
        {
            "uuid": new_uuid(),
            "workflow": new_uuid(),
            "test_dataset": [new_uuid()],
            "size_train_dataset": 1,
        },
    )
    assert r.status_code == 403 and set(r.json()) == {"Error"}
    assert member.problem(test=[new_uuid()])  # members create problems, algos, data

    first = _first(member, market)
    for path, body in (
        (f"worker/learnuplet/{first}", {"worker": ZERO_UUID}),
        (f"learndone/{first}", {"status": "failed"}),
        (f"learnuplet/{first}", {"status": "failed"}),
    ):
        r = member.post(path, body)
        assert r.status_code == 403 and "compute" in r.json()["Error"], path
        assert viewer.post(path, body).status_code == 403
    assert compute_orch.post(f"worker/learnuplet/{first}", {"worker": ZERO_UUID}).status_code == 200


def test_only_the_claiming_account_or_an_admin_reports(world, market, compute_orch):
    other = make_user("compute-a2", is_service_account=True)
    add_member(world.project, other, Role.MEMBER)
    first = _first(compute_orch, market)
    assert compute_orch.post(f"worker/learnuplet/{first}", {"worker": ZERO_UUID}).status_code == 200
    r = Orchestrator(other.username).post(f"learndone/{first}", {"status": "done", "perf": 1.0})
    assert r.status_code == 400 and "another worker" in r.json()["Error"]
    # A project admin may close it (a worker that vanished).
    r = Orchestrator(world.owner.username).post(f"learndone/{first}", {"status": "failed"})
    assert r.status_code == 200


def test_a_service_account_with_a_read_only_role_is_no_compute(world, market):
    reader = make_user("compute-ro", is_service_account=True)
    add_member(world.project, reader, Role.VIEWER)
    first = _first(Orchestrator(reader.username), market)
    r = Orchestrator(reader.username).post(f"worker/learnuplet/{first}", {"worker": ZERO_UUID})
    assert r.status_code == 403


def test_the_project_of_a_request(world, settings):
    """The X-Orchard-Project header, else MARKETPLACE_PROJECT, else the account's only project;
    an account of several projects must say which."""
    both = make_user("compute-ab", is_service_account=True)
    add_member(world.project, both, Role.MEMBER)
    add_member(world.other_project, both, Role.MEMBER)
    r = Orchestrator(both.username).get("problem")
    assert r.status_code == 403 and "several projects" in r.json()["Error"]

    in_a = Orchestrator(both.username, project=world.project.pk)
    problem = in_a.problem(test=[new_uuid()])
    assert [p["uuid"] for p in in_a.get("problem").json()["problems"]] == [problem]
    in_b = Orchestrator(both.username, project=world.other_project.pk)
    assert in_b.get("problem").json() == {"problems": []}

    settings.MARKETPLACE_PROJECT = world.project.pk
    assert [p["uuid"] for p in Orchestrator(both.username).get("problem").json()["problems"]] == [
        problem
    ]
    # Configured or named, the account must still be a member there.
    r = Orchestrator(world.outsider.username).get("problem")
    assert r.status_code == 404 and set(r.json()) == {"Error"}
    lonely = make_user("lonely")
    settings.MARKETPLACE_PROJECT = None
    r = Orchestrator(lonely.username).get("problem")
    assert r.status_code == 403 and "not a member" in r.json()["Error"]
    third = make_project(world.outsider, name="C")
    r = Orchestrator(both.username, project=third.pk).get("problem")
    assert r.status_code == 404
    assert Project.objects.count() == 3


def test_a_studio_jwt_works_too_and_answers_the_protocols_json(world, market):
    client = client_for(world.owner)
    r = client.get("/orchestrator/learnuplet", {"algo": market["algo"]})
    assert r.status_code == 200
    assert [u["rank"] for u in r.json()["learnuplets"]] == [0, 1, 2]
    assert "status" not in r.json()  # not the studio envelope
    bad = client_for(None)
    bad.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    r = bad.get("/orchestrator/learnuplet")
    assert r.status_code == 401 and set(r.json()) == {"Error"}


def test_basic_passwords_of_factories_are_real(world):
    # Guard: the tests above would pass vacuously if Basic auth ignored passwords.
    assert Orchestrator(world.owner.username, PASSWORD + "x").get("problem").status_code == 401
