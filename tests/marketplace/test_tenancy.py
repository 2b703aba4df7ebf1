"""Cross-tenant checks of the orchestrator gateway. Its routes with a document uuid are also in
tests/test_tenancy.py (URL kwargs registered in tests/marketplace/tenancy.py); here every route,
with and without kwargs, is called by members of project A with project B's objects, over Basic
auth and with a studio JWT."""

import pytest

from apps.core.tenancy import Role
from apps.marketplace.models import Learnuplet, Preduplet
from apps.marketplace.urls import urlpatterns
from tests.clusters.helpers import make_cluster
from tests.conftest import client_for
from tests.factories import add_member, make_user
from tests.marketplace import tenancy
from tests.marketplace.conftest import ZERO_UUID, Orchestrator, new_uuid
from tests.test_tenancy import _snapshot

pytestmark = pytest.mark.django_db

COVERED = {
    "orchestrator/problem",
    "orchestrator/problem/<str:problem_uuid>",
    "orchestrator/algo",
    "orchestrator/algo/<str:algo_uuid>",
    "orchestrator/data",
    "orchestrator/data/<str:data_uuid>",
    "orchestrator/learnuplet",
    "orchestrator/learnuplet/<str:learnuplet_uuid>",
    "orchestrator/preduplet",
    "orchestrator/preduplet/<str:preduplet_uuid>",
    "orchestrator/prediction",
    "orchestrator/worker/learnuplet/<str:learnuplet_uuid>",
    "orchestrator/worker/preduplet/<str:preduplet_uuid>",
    "orchestrator/learndone/<str:learnuplet_uuid>",
    "orchestrator/preddone/<str:preduplet_uuid>",
    "^orchestrator(?:/.*)?$",
}


COMPUTE_PATHS = ("learnuplet/", "preduplet/", "worker/", "learndone/", "preddone/")


def test_every_gateway_route_is_covered_here():
    assert {str(p.pattern) for p in urlpatterns} == COVERED, (
        "add new orchestrator routes to tests/marketplace/test_tenancy.py"
    )


def _victim(world):
    """Project B's problem (with data, an algo, a done rank 0 and a preduplet)."""
    preduplet_uuid = tenancy._preduplet(world.other_project, world.outsider)
    preduplet = Preduplet.objects.get(uuid=preduplet_uuid)
    todo = Learnuplet.objects.filter(project=world.other_project, status="todo").first()
    done = Learnuplet.objects.filter(project=world.other_project, status="done").first()
    problem = preduplet.problem
    return {
        "problem": str(problem.uuid),
        "algo": str(done.algo.uuid),
        "data": problem.test_dataset[0],
        "todo": str(todo.uuid),
        "done": str(done.uuid),
        "preduplet": preduplet_uuid,
    }


def _calls(v):
    """(method, path, body, expected status) for every route; B's uuids are unknown in A."""
    return [
        ("GET", f"problem/{v['problem']}", None, 404),
        ("GET", f"algo/{v['algo']}", None, 404),
        ("GET", f"data/{v['data']}", None, 404),
        ("GET", f"learnuplet/{v['todo']}", None, 404),
        ("GET", f"preduplet/{v['preduplet']}", None, 404),
        ("POST", f"learnuplet/{v['todo']}", {"status": "failed"}, 404),
        ("POST", f"preduplet/{v['preduplet']}", {"status": "failed"}, 404),
        # The compute routes answer an unknown uplet with 400, as upstream does.
        ("POST", f"worker/learnuplet/{v['todo']}", {"worker": ZERO_UUID}, 400),
        ("POST", f"worker/preduplet/{v['preduplet']}", {"worker": ZERO_UUID}, 400),
        ("POST", f"learndone/{v['done']}", {"status": "done", "perf": 1.0}, 400),
        (
            "POST",
            f"preddone/{v['preduplet']}",
            {"status": "done", "prediction_storage_uuid": ZERO_UUID},
            400,
        ),
        ("POST", "algo", {"uuid": new_uuid(), "name": "x", "problem": v["problem"]}, 400),
        ("POST", "data", {"uuid": [new_uuid()], "problems": [v["problem"]]}, 400),
        ("POST", "prediction", {"data": [new_uuid()], "problem": v["problem"]}, 400),
        ("GET", "nothing-here", None, 404),
    ]


def test_members_of_another_project_reach_nothing_through_the_orchestrator(world):
    victim = _victim(world)
    compute = make_user("compute-a", is_service_account=True)
    add_member(world.project, compute, Role.MEMBER)
    # Even with the victim's uuids as filter values and the victim's project in the header.
    callers = [
        (Orchestrator(world.owner.username), True),
        (Orchestrator(compute.username), True),
        (Orchestrator(world.member.username), False),  # not a compute account
    ]
    before = _snapshot()
    failures = []
    for orch, is_compute in callers:
        for method, path, body, expected in _calls(victim):
            r = orch.get(path) if method == "GET" else orch.post(path, body)
            if method == "POST" and path.startswith(COMPUTE_PATHS) and not is_compute:
                expected = 403
            if r.status_code != expected or set(r.json()) != {"Error"}:
                failures.append(f"{orch.headers} {method} {path} -> {r.status_code} {r.content}")
        for collection in ("problem", "algo", "data", "learnuplet", "preduplet"):
            assert orch.get(collection).json() == {f"{collection}s": []}
        assert orch.get("learnuplet", algo=victim["algo"]).json() == {"learnuplets": []}
        r = Orchestrator(world.owner.username, project=world.other_project.pk).get("problem")
        assert r.status_code == 404
    # The studio JWT of A's admin: the same.
    jwt = client_for(world.owner)
    for method, path, body, expected in _calls(victim):
        url = f"/orchestrator/{path}"
        r = jwt.get(url) if method == "GET" else jwt.post(url, body, format="json")
        if r.status_code != expected:
            failures.append(f"jwt {method} {path} -> {r.status_code}")
    assert not failures, "cross-tenant access:\n" + "\n".join(failures)
    assert _snapshot() == before, "a cross-tenant request changed the database"


def test_foreign_clusters_and_datasets_are_not_linked(world, owner_orch):
    """An algo uuid naming another project's cluster is an external algo, a data uuid naming
    another project's dataset an external data: nothing of B is trained or read."""
    from apps.marketplace.models import Algo, Data

    foreign_cluster = make_cluster(world.other_project, world.outsider)
    problem = owner_orch.problem(test=[new_uuid()])
    owner_orch.algo(problem, uuid_=str(foreign_cluster.pk))
    algo = Algo.objects.get(project=world.project, uuid=foreign_cluster.pk)
    assert algo.cluster is None and not algo.is_builtin
    from tests.datasets.tenancy import _dataset

    foreign_dataset = _dataset(world.other_project, world.outsider)
    owner_orch.data([str(foreign_dataset.pk)], [problem])
    assert Data.objects.get(project=world.project, uuid=foreign_dataset.pk).dataset is None
