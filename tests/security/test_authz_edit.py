"""One edit rule for every surface (issue #13, finding 1).

Changing a cluster (training it, saving or loading its checkpoints, switching its host or mode,
deleting it) needs edit rights on it: its owner, a project admin or a global admin. Before, the
main API let a member start a train task on another member's cluster (201, weights overwritten)
while the Hanami gateway refused it, and Hanami let a member save a checkpoint of another
member's cluster (`cluster/save`) while the main API refused it.

The test enumerates the mutating routes of both surfaces that reach a cluster and fails when a
new one appears without being listed here.
"""

import pytest

from apps.clusters.models import Checkpoint, Cluster
from apps.clusters.services import checkpoint_save
from apps.core.tenancy import Role
from apps.datasets.demo import create_demo_datasets
from apps.datasets.models import Dataset
from apps.tasks.models import Task, target_of
from tests.clusters.helpers import make_cluster
from tests.conftest import client_for
from tests.factories import add_member, make_user
from tests.hanami.conftest import SDK
from tests.tenancy import iter_routes

pytestmark = pytest.mark.django_db

MUTATING = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def scene(world):
    """bob (member) owns a shared cluster; dave (another member) owns one of the same shape."""
    create_demo_datasets(project=world.project, actor=world.owner)
    dave = make_user("dave")
    add_member(world.project, dave, Role.MEMBER)
    victim = make_cluster(world.project, world.member, name="bobs-net")
    own = make_cluster(world.project, dave, name="daves-net")
    own_checkpoint = checkpoint_save(cluster=own, actor=dave, name="daves-cp")
    train_set = Dataset.objects.get(project=world.project, name="digits-train")
    return world, dave, victim, own_checkpoint, train_set


def _state(cluster):
    cluster = Cluster.objects.get(pk=cluster.pk)
    return (
        cluster.version,
        cluster.mode,
        cluster.host_id,
        cluster.updated_at,
        Task.objects.filter(**target_of(cluster)).count(),
        Checkpoint.objects.filter(cluster=cluster).count(),
    )


def _main_api_calls(world, victim, own_checkpoint, train_set):
    """(method, route name, url, body) of every main-API route that changes a cluster."""
    p, c = world.project.pk, victim.pk
    return [
        (
            "POST",
            "task-list",
            f"/api/projects/{p}/tasks",
            {"name": "t", "kind": "train", "cluster_id": str(c), "dataset_id": str(train_set.pk)},
        ),
        ("DELETE", "cluster-detail", f"/api/projects/{p}/clusters/{c}", None),
        ("PUT", "cluster-mode", f"/api/projects/{p}/clusters/{c}/mode", {"mode": "DIRECT"}),
        ("PUT", "cluster-host", f"/api/projects/{p}/clusters/{c}/host", {"host_id": "cpu"}),
        (
            "POST",
            "cluster-checkpoints",
            f"/api/projects/{p}/clusters/{c}/checkpoints",
            {"name": "x"},
        ),
        (
            "POST",
            "checkpoint-restore",
            f"/api/projects/{p}/checkpoints/{own_checkpoint.pk}/restore",
            {"cluster_id": str(c)},
        ),
    ]


def _hanami_calls(victim, own_checkpoint, train_set):
    c = str(victim.pk)
    return [
        ("DELETE", "hanami-cluster", "cluster", {"uuid": c}),
        ("POST", "hanami-cluster-save", "cluster/save", {"name": "x", "cluster_uuid": c}),
        (
            "POST",
            "hanami-cluster-load",
            "cluster/load",
            {"checkpoint_uuid": str(own_checkpoint.pk), "cluster_uuid": c},
        ),
        ("PUT", "hanami-cluster-mode", "cluster/set_mode", {"new_state": "DIRECT", "uuid": c}),
        (
            "PUT",
            "hanami-cluster-switch-host",
            "cluster/switch_host",
            {"cluster_uuid": c, "host_uuid": "cpu"},
        ),
        (
            "POST",
            "hanami-task",
            "task",
            {"name": "t", "type": "train", "cluster_uuid": c, "dataset_uuid": str(train_set.pk)},
        ),
    ]


def _mutating_cluster_routes() -> set[tuple[str, str]]:
    """(method, route name) of every mutating route whose URL names a cluster, or that belongs
    to the Hanami cluster family: a new one must be added to the tables above."""
    found = set()
    for route in iter_routes():
        name = route.name or ""
        if "cluster_id" in route.kwargs or (
            name.startswith("hanami-cluster") and name != "hanami-cluster-all"
        ):
            for method in route.methods:
                if method in MUTATING:
                    found.add((method, name))
    return found


def test_every_mutating_cluster_route_is_covered(scene):
    world, _dave, victim, own_checkpoint, train_set = scene
    listed = {(m, n) for m, n, *_ in _main_api_calls(world, victim, own_checkpoint, train_set)}
    listed |= {(m, n) for m, n, *_ in _hanami_calls(victim, own_checkpoint, train_set)}
    missing = _mutating_cluster_routes() - listed
    # Cluster creation (POST hanami-cluster) changes no existing cluster.
    missing.discard(("POST", "hanami-cluster"))
    assert not missing, f"mutating cluster routes not checked by this test: {sorted(missing)}"


def test_a_member_changes_no_cluster_of_another_member_on_any_surface(scene):
    world, dave, victim, own_checkpoint, train_set = scene
    before = _state(victim)
    failures = []

    client = client_for(dave)
    for method, name, url, body in _main_api_calls(world, victim, own_checkpoint, train_set):
        response = getattr(client, method.lower())(url, body, format="json")
        payload = response.json()
        if response.status_code not in (403, 404) or payload.get("status") != "error":
            failures.append(f"main API {method} {name} -> {response.status_code}")
        elif payload["error"]["code"] not in ("FORBIDDEN", "NOT_FOUND"):
            failures.append(f"main API {method} {name} -> code {payload['error']['code']}")

    sdk = SDK(hanami_token(dave, world.project))
    for method, name, path, body in _hanami_calls(victim, own_checkpoint, train_set):
        if method in ("GET", "DELETE"):
            response = sdk._send(method, path, params=body)
        else:
            response = sdk._send(method, path, body)
        # Hanami answers policy denials with 401 {"error": ...} (the SDK's UnauthorizedException).
        if response.status_code not in (401, 404) or set(response.json()) != {"error"}:
            failures.append(f"Hanami {method} {name} -> {response.status_code}")

    assert not failures, "another member's cluster was changed:\n" + "\n".join(failures)
    assert _state(victim) == before
    assert not Checkpoint.objects.filter(owner=dave).exclude(pk=own_checkpoint.pk).exists()


def test_owner_and_project_admin_may_change_the_cluster(scene):
    """The same rule lets the owner and a project admin through, on both surfaces."""
    world, _dave, victim, _own_checkpoint, train_set = scene
    body = {
        "name": "t",
        "kind": "train",
        "cluster_id": str(victim.pk),
        "dataset_id": str(train_set.pk),
    }
    url = f"/api/projects/{world.project.pk}/tasks"
    assert client_for(world.owner).post(url, body, format="json").status_code == 201  # admin
    saved = SDK(hanami_token(world.member, world.project)).post(
        "cluster/save", {"name": "mine", "cluster_uuid": str(victim.pk)}
    )
    assert saved.status_code == 200, saved.content  # owner
    # A request task only reads the cluster: every writer may start one.
    request = {**body, "kind": "request"}
    assert client_for(scene[1]).post(url, request, format="json").status_code == 201


def hanami_token(user, project) -> str:
    from apps.accounts.services import token_pair_for

    return token_pair_for(user=user, project=project)["access"]
