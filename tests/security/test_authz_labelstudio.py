"""Label Studio backends: private networks are for project admins, and fetch errors tell the
caller nothing about what lies behind a host (issue #13, finding 3).

Before, any member could turn `allow_private_networks` on (and so aim the server at internal
hosts), and a failed fetch answered "127.0.0.1 answered HTTP 404" or "Could not fetch from
127.0.0.1: [Errno 111] Connection refused": a port and path scanner.
"""

import json
import socket

import pytest
from django.test import Client

from apps.mlbackend.models import LabelStudioBackend
from tests.clusters.helpers import make_cluster, template
from tests.conftest import client_for
from tests.mlbackend.labelstudio_helpers import (
    IMAGE_CONFIG,
    TaskDataServer,
    ls_headers,
    ls_task,
    make_backend,
    predict_body,
    setup_body,
)

pytestmark = pytest.mark.django_db


def _url(world, *parts):
    return "/".join([f"/api/mlbackend/{world.project.pk}/backends", *parts])


def _forbidden(response):
    assert response.status_code == 403, response.content
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == "FORBIDDEN"
    assert "allow_private_networks" in body["error"]["message"]


def _body(world, user, **extra):
    cluster = make_cluster(world.project, user, text=template(inputs=64, hidden=16, outputs=2))
    return {"name": "ls", "cluster_id": str(cluster.pk), "label_config": IMAGE_CONFIG, **extra}


def test_only_project_admins_allow_private_networks(world):
    member = client_for(world.member)
    before = LabelStudioBackend.objects.count()
    _forbidden(
        member.post(
            _url(world), _body(world, world.member, allow_private_networks=True), format="json"
        )
    )
    assert LabelStudioBackend.objects.count() == before

    created = member.post(_url(world), _body(world, world.member), format="json")
    assert created.status_code == 201, created.content
    backend_id = created.json()["data"]["id"]
    _forbidden(
        member.patch(_url(world, backend_id), {"allow_private_networks": True}, format="json")
    )
    assert not LabelStudioBackend.objects.get(pk=backend_id).allow_private_networks

    admin = client_for(world.owner)
    allowed = admin.patch(_url(world, backend_id), {"allow_private_networks": True}, format="json")
    assert allowed.status_code == 200 and allowed.json()["data"]["allow_private_networks"]
    # Once on, the member may not aim the backend at other hosts, but may rename it.
    _forbidden(
        member.patch(_url(world, backend_id), {"allowed_hosts": ["10.0.0.1"]}, format="json")
    )
    assert LabelStudioBackend.objects.get(pk=backend_id).allowed_hosts == []
    renamed = member.patch(_url(world, backend_id), {"name": "renamed"}, format="json")
    assert renamed.status_code == 200
    # Admins create such backends directly.
    admin_created = admin.post(
        _url(world), _body(world, world.owner, allow_private_networks=True), format="json"
    )
    assert admin_created.status_code == 201


def _post(backend_id, route, body):
    return Client().post(
        f"/ml/{backend_id}/{route}",
        json.dumps(body),
        content_type="application/json",
        **ls_headers(),
    )


def _predict_error(backend, hostname, path) -> str:
    assert _post(backend.pk, "setup", setup_body(IMAGE_CONFIG, hostname)).status_code == 200
    response = _post(
        backend.pk, "predict", predict_body([ls_task(1, {"image": path})], IMAGE_CONFIG)
    )
    # Per-task results (issue #16): the batch answers 200, the task carries its error.
    assert response.status_code == 200, response.content
    (item,) = response.json()["results"]
    assert item["result"] == []
    return item["error"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_errors_do_not_reveal_ports_or_paths(world, caplog):
    backend = make_backend(world.project, world.owner, allow_private_networks=True)
    with TaskDataServer({"/data/upload/1/exists.png": b"x"}) as server:
        missing_path = _predict_error(backend, server.url, "/data/upload/1/missing.png")
    closed = _closed_port()
    closed_port = _predict_error(backend, f"http://127.0.0.1:{closed}", "/data/upload/1/a.png")

    # An open port with a missing path and a closed port answer the very same thing.
    assert missing_path == closed_port
    assert "could not fetch the task data" in missing_path.lower()
    for leak in ("404", "refused", "Errno", str(server.port), str(closed), "missing.png"):
        assert leak not in missing_path, leak
    # The details are in the server log.
    logged = caplog.text
    assert "HTTP 404" in logged and str(closed) in logged
