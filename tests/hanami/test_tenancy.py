"""Cross-tenant checks of the Hanami gateway. Its routes take ids in query strings and bodies, not
URL kwargs, so tests/test_tenancy.py cannot fill them: every route is called here with another
project's ids, and the socket is tried with foreign uploads and bad or expired tokens."""

import io
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from apps.accounts.services import membership_remove, token_pair_for
from apps.clusters.services import checkpoint_save, request_result_store
from apps.core.tenancy import Role
from apps.datasets import imports as dataset_imports
from apps.datasets import services as dataset_services
from apps.datasets import uploads as dataset_uploads
from apps.hanami.proto.messages import FileUpload_Message, FileUploadResponse_Message
from apps.hanami.urls import urlpatterns
from apps.tasks.models import Task, target_of
from tests.clusters.helpers import make_cluster
from tests.datasets.conftest import idx_bytes, mnist_arrays
from tests.factories import add_member
from tests.hanami.conftest import SDK
from tests.test_tenancy import _snapshot


def _foreign_objects(world):
    """A ready dataset and a pending one with its upload sessions, in project B."""
    images, labels = mnist_arrays(n=4)
    ready = dataset_imports.dataset_import_mnist(
        project=world.other_project,
        actor=world.outsider,
        name="victim",
        images=io.BytesIO(idx_bytes(images)),
        labels=io.BytesIO(idx_bytes(labels)),
    )
    images_s = dataset_uploads.upload_session_create(
        project=world.other_project, actor=world.outsider, size=8
    )
    labels_s = dataset_uploads.upload_session_create(
        project=world.other_project, actor=world.outsider, size=8
    )
    pending = dataset_uploads.dataset_create_pending(
        project=world.other_project,
        actor=world.outsider,
        name="victim-pending",
        kind="mnist",
        uploads={"images": images_s, "labels": labels_s},
    )
    csv_s = dataset_uploads.upload_session_create(
        project=world.other_project, actor=world.outsider, size=8
    )
    csv = dataset_uploads.dataset_create_pending(
        project=world.other_project,
        actor=world.outsider,
        name="victim-csv",
        kind="csv",
        uploads={"file": csv_s},
    )
    cluster = make_cluster(world.other_project, world.outsider, name="victim-net")
    checkpoint = checkpoint_save(cluster=cluster, actor=world.outsider, name="victim-ckpt")
    task = Task.objects.create(
        project=world.other_project,
        owner=world.outsider,
        name="victim-task",
        kind="request",
        **target_of(cluster),
        state="finished",
    )
    dataset_services.task_dataset_link(task=task, dataset=ready)
    request_result_store(task=task, classes=[1, 2, 3, 4])
    return {
        "cluster": str(cluster.pk),
        "checkpoint": str(checkpoint.pk),
        "task": str(task.pk),
        "ready": str(ready.pk),
        "pending": str(pending.pk),
        "images": str(images_s.pk),
        "labels": str(labels_s.pk),
        "csv": str(csv.pk),
        "csv_file": str(csv_s.pk),
    }


def _calls(world, ids):
    """(method, path, body-or-params, expected status) for every gateway route and method."""
    victim_user, victim_project = world.outsider.username, world.other_project.pk
    mnist_put = {
        "uuid": ids["pending"],
        "uuid_input_file": ids["images"],
        "uuid_label_file": ids["labels"],
    }
    csv_put = {"uuid": ids["csv"], "uuid_input_file": ids["csv_file"]}
    return [
        ("PUT", "token", {"project_id": victim_project}, 404),
        ("POST", "user", {"id": "pwned", "name": "x", "password": "x" * 20}, 401),
        ("GET", "user", {"id": victim_user}, 401),
        ("DELETE", "user", {"id": victim_user}, 401),
        ("GET", "user/all", {}, 401),
        ("POST", "user/project", {"project_id": victim_project}, 404),
        (
            "POST",
            "user/project",
            {"id": "alice", "project_id": victim_project, "role": "admin"},
            401,
        ),
        ("DELETE", "user/project", {"project_id": victim_project, "id": victim_user}, 401),
        ("POST", "project", {"id": "pwned", "name": "x"}, 401),
        ("GET", "project", {"id": victim_project}, 401),
        ("DELETE", "project", {"id": victim_project}, 401),
        ("GET", "project/all", {}, 401),
        ("PUT", "mnist/dataset", mnist_put, 404),
        ("PUT", "csv/dataset", csv_put, 404),
        ("PUT", "dataset/upload/mnist", mnist_put, 404),
        ("PUT", "dataset/upload/csv", csv_put, 404),
        ("GET", "dataset/progress", {"uuid": ids["pending"]}, 404),
        ("GET", "dataset", {"uuid": ids["ready"]}, 404),
        ("DELETE", "dataset", {"uuid": ids["ready"]}, 404),
        ("DELETE", "dataset", {"uuid": ids["pending"]}, 404),
        ("POST", "dataset/check", {"result_uuid": ids["task"], "dataset_uuid": ids["ready"]}, 404),
        ("GET", "dataset/check", {"result_uuid": ids["task"], "dataset_uuid": ids["ready"]}, 404),
        ("GET", "cluster", {"uuid": ids["cluster"]}, 404),
        ("DELETE", "cluster", {"uuid": ids["cluster"]}, 404),
        ("POST", "cluster/save", {"name": "x", "cluster_uuid": ids["cluster"]}, 404),
        (
            "POST",
            "cluster/load",
            {"checkpoint_uuid": ids["checkpoint"], "cluster_uuid": ids["cluster"]},
            404,
        ),
        ("PUT", "cluster/set_mode", {"new_state": "DIRECT", "uuid": ids["cluster"]}, 404),
        ("PUT", "cluster/switch_host", {"cluster_uuid": ids["cluster"], "host_uuid": "cpu"}, 404),
        (
            "POST",
            "task",
            {
                "name": "x",
                "type": "train",
                "cluster_uuid": ids["cluster"],
                "dataset_uuid": ids["ready"],
            },
            404,
        ),
        ("GET", "task", {"uuid": ids["task"], "cluster_uuid": ids["cluster"]}, 404),
        ("DELETE", "task", {"uuid": ids["task"], "cluster_uuid": ids["cluster"]}, 404),
        ("GET", "task/all", {"cluster_uuid": ids["cluster"]}, 404),
        ("GET", "request_result", {"uuid": ids["task"]}, 404),
        ("DELETE", "request_result", {"uuid": ids["task"]}, 404),
        ("DELETE", "checkpoint", {"uuid": ids["checkpoint"]}, 404),
        ("GET", "audit_log", {"user_id": victim_user}, 401),
        ("GET", "error_log", {"user_id": victim_user}, 401),
    ]


def test_every_gateway_route_is_covered_here():
    covered = {
        "token",
        "user",
        "user/all",
        "user/project",
        "project",
        "project/all",
        "mnist/dataset",
        "csv/dataset",
        "dataset/upload/mnist",
        "dataset/upload/csv",
        "dataset/progress",
        "dataset",
        "dataset/all",
        "dataset/check",
        "cluster",
        "cluster/all",
        "cluster/save",
        "cluster/load",
        "cluster/set_mode",
        "cluster/switch_host",
        "task",
        "task/all",
        "request_result",
        "request_result/all",
        "checkpoint",
        "checkpoint/all",
        "host/all",
        "audit_log",
        "error_log",
        # The catch-all: 404 for any other path, reads nothing (tests/core/test_unknown_routes.py).
        r"^control(?:/.*)?$",
    }
    routes = {str(p.pattern).removeprefix("control/v1/") for p in urlpatterns}
    assert routes == covered, "add new gateway routes to tests/hanami/test_tenancy.py"


@pytest.mark.django_db
def test_a_member_of_another_project_reaches_nothing_through_the_gateway(world):
    ids = _foreign_objects(world)
    before = _snapshot()
    failures = []
    for attacker in (world.owner, world.member):
        sdk = SDK(token_pair_for(user=attacker)["access"])
        for method, path, payload, expected in _calls(world, ids):
            if method in ("GET", "DELETE"):
                response = sdk._send(method, path, params=payload)
            else:
                response = sdk._send(method, path, payload)
            if response.status_code != expected or set(response.json()) != {"error"}:
                failures.append(f"{attacker} {method} {path} -> {response.status_code}")
        # Lists show only the attacker's own project.
        for path in ("dataset/all", "cluster/all", "checkpoint/all", "request_result/all"):
            listing = sdk.get(path).json()
            assert all(row[1] == world.project.pk for row in listing["body"]), path
        projects = sdk.get("user/project").json()["body"]
        assert victim_absent(projects, world.other_project.pk)
    assert not failures, "cross-tenant access:\n" + "\n".join(failures)
    assert _snapshot() == before, "a cross-tenant request changed the database"


def victim_absent(rows, project_id) -> bool:
    return all(row[0] != project_id for row in rows)


# -- the socket ---------------------------------------------------------------------------------


def _app():
    from config.asgi import application

    return application


async def _first_answer(token, object_id, target="file_upload"):
    comm = WebsocketCommunicator(_app(), "/")
    assert (await comm.connect(timeout=5))[0]
    await comm.send_to(text_data=json.dumps({"token": token, "target": target, "uuid": object_id}))
    return comm, json.loads(await comm.receive_from(timeout=5))


def _expired_token(user, project):
    token = AccessToken.for_user(user)
    token["project_id"] = project.pk
    token.set_exp(lifetime=-timedelta(seconds=5))
    return str(token)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_socket_refuses_foreign_uploads_and_bad_tokens(world):
    ids = await sync_to_async(_foreign_objects)(world)
    own_token = await sync_to_async(lambda: token_pair_for(user=world.owner)["access"])()
    viewer_token = await sync_to_async(lambda: token_pair_for(user=world.viewer)["access"])()
    expired = await sync_to_async(_expired_token)(world.outsider, world.other_project)
    victim_token = await sync_to_async(lambda: token_pair_for(user=world.outsider)["access"])()
    for token, object_id in (
        (own_token, ids["images"]),  # foreign upload
        (own_token, ids["csv_file"]),
        (own_token, "not-a-uuid"),
        (viewer_token, ids["images"]),
        (expired, ids["images"]),  # the owner's own upload, expired token
        ("garbage", ids["images"]),
        ("", ids["images"]),
    ):
        comm, answer = await _first_answer(token, object_id)
        assert answer["success"] is False, (token, object_id)
        assert (await comm.receive_output(timeout=5))["type"] == "websocket.close"

    # The rightful owner may upload; once removed from the project, the next chunk is refused.
    comm, answer = await _first_answer(victim_token, ids["images"])
    assert answer["success"] is True
    await comm.send_to(bytes_data=FileUpload_Message(position=0, data=b"ab").SerializeToString())
    assert FileUploadResponse_Message.FromString(await comm.receive_from(timeout=5)).success
    # (Another admin first: the last admin of a project cannot be removed.)
    await sync_to_async(add_member)(
        world.other_project, world.global_admin, Role.ADMIN, is_project_admin=True
    )
    await sync_to_async(membership_remove)(project=world.other_project, user=world.outsider)
    await comm.send_to(bytes_data=FileUpload_Message(position=2, data=b"cd").SerializeToString())
    response = FileUploadResponse_Message.FromString(await comm.receive_from(timeout=5))
    assert not response.success
    assert (await comm.receive_output(timeout=5))["type"] == "websocket.close"
