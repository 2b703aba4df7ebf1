"""Label Studio backends in the main API: /api/mlbackend/{project_id}/backends[...]."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.clusters.services import checkpoint_save
from apps.mlbackend.models import LabelStudioAnnotation, LabelStudioBackend
from apps.tasks.models import Task
from tests.clusters.helpers import make_cluster, template
from tests.conftest import client_for
from tests.mlbackend.labelstudio_helpers import IMAGE_CONFIG, TEXT_CONFIG, make_backend

pytestmark = pytest.mark.django_db


def _url(project, *parts):
    return "/".join([f"/api/mlbackend/{project.pk}/backends", *parts])


def _model(world, user=None, inputs=64, outputs=2):
    return make_cluster(
        world.project, user or world.owner, text=template(inputs=inputs, hidden=16, outputs=outputs)
    )


def test_create_read_list_update_delete(world):
    client = client_for(world.member)
    cluster = _model(world, world.member)
    r = client.post(
        _url(world.project),
        {
            "name": "stripes",
            "cluster_id": str(cluster.pk),
            "label_config": IMAGE_CONFIG,
            "basic_auth_user": "ls",
            "basic_auth_password": "secret-pass",
            "allowed_hosts": ["Images.Example.com", "cdn.example.com:8443"],
            "train_params": {"epochs": 5},
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    data = r.json()["data"]
    backend_id = data["id"]
    assert backend_id.startswith("mlb-")
    assert data["url"] == f"http://testserver/ml/{backend_id}/"
    assert data["interface"] == {
        "kind": "image",
        "from_name": "choice",
        "to_name": "image",
        "data_key": "image",
        "labels": ["Horizontal", "Vertical"],
        "multiple": False,
    }
    assert data["has_credentials"] is True and "basic_auth_password" not in data
    assert data["allowed_hosts"] == ["images.example.com", "cdn.example.com:8443"]
    assert (data["model_version"], data["annotation_count"], data["owner"]) == ("1.0.0", 0, "bob")
    stored = LabelStudioBackend.objects.get(pk=backend_id)
    assert stored.basic_auth_password != "secret-pass"  # hashed

    r = client.get(_url(world.project))
    assert r.status_code == 200 and [b["id"] for b in r.json()["data"]["items"]] == [backend_id]
    assert client_for(world.viewer).get(_url(world.project, backend_id)).status_code == 200

    r = client.patch(
        _url(world.project, backend_id),
        {"label_config": TEXT_CONFIG, "basic_auth_user": "", "basic_auth_password": ""},
        format="json",
    )
    assert r.status_code == 200, r.content
    assert r.json()["data"]["interface"]["kind"] == "text"
    assert r.json()["data"]["has_credentials"] is False

    assert client.delete(_url(world.project, backend_id)).status_code == 204
    assert not LabelStudioBackend.objects.filter(pk=backend_id).exists()


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"label_config": "<View>"}, "label_config"),
        (
            {"label_config": IMAGE_CONFIG.replace("</Choices>", '<Choice value="X"/></Choices>')},
            "label_config",
        ),
        ({"basic_auth_user": "only-a-user"}, "basic_auth_password"),
        ({"allowed_hosts": ["http://x/y"]}, "allowed_hosts"),
        ({"train_params": {"epochs": 0}}, "train_params"),
        ({"train_params": {"device": "cuda"}}, "train_params"),
        ({"project_id": "proj-x"}, "project_id"),
        ({"cluster_id": "not-a-uuid"}, "cluster_id"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(world, changes, field):
    cluster = _model(world)
    body = {"name": "b", "cluster_id": str(cluster.pk), "label_config": IMAGE_CONFIG, **changes}
    r = client_for(world.owner).post(_url(world.project), body, format="json")
    assert r.status_code == 422, r.content
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and field in error["details"], error
    assert not LabelStudioBackend.objects.exists()


def test_models_and_checkpoints_of_the_project_only(world):
    foreign = make_cluster(world.other_project, world.outsider)
    foreign_checkpoint = checkpoint_save(cluster=foreign, actor=world.outsider, name="cp")
    client = client_for(world.owner)
    r = client.post(
        _url(world.project), {"name": "b", "cluster_id": str(foreign.pk)}, format="json"
    )
    assert r.status_code == 422 and "cluster_id" in r.json()["error"]["details"]
    own = _model(world)
    r = client.post(
        _url(world.project),
        {"name": "b", "cluster_id": str(own.pk), "checkpoint_id": str(foreign_checkpoint.pk)},
        format="json",
    )
    assert r.status_code == 422 and "checkpoint_id" in r.json()["error"]["details"]
    # A checkpoint of another shape does not fit.
    other_shape = checkpoint_save(cluster=_model(world, inputs=16), actor=world.owner, name="cp")
    r = client.post(
        _url(world.project),
        {"name": "b", "cluster_id": str(own.pk), "checkpoint_id": str(other_shape.pk)},
        format="json",
    )
    assert r.status_code == 422 and "checkpoint_id" in r.json()["error"]["details"]
    assert not LabelStudioBackend.objects.exists()


def test_roles(world):
    admins_model = _model(world, world.owner)
    # A viewer cannot create; a member cannot bind a model they may not change (training
    # would overwrite its weights), but can bind their own.
    r = client_for(world.viewer).post(
        _url(world.project), {"name": "b", "cluster_id": str(admins_model.pk)}, format="json"
    )
    assert r.status_code == 403
    member = client_for(world.member)
    r = member.post(
        _url(world.project), {"name": "b", "cluster_id": str(admins_model.pk)}, format="json"
    )
    assert r.status_code == 403
    own = _model(world, world.member)
    r = member.post(_url(world.project), {"name": "b", "cluster_id": str(own.pk)}, format="json")
    assert r.status_code == 201
    admins_backend = make_backend(world.project, world.owner)
    assert (
        member.patch(
            _url(world.project, admins_backend.pk), {"name": "x"}, format="json"
        ).status_code
        == 403
    )
    assert member.delete(_url(world.project, admins_backend.pk)).status_code == 403
    assert member.post(_url(world.project, admins_backend.pk, "train")).status_code == 403
    # Private backends are hidden from other members.
    private = make_backend(world.project, world.owner, visibility="private")
    assert member.get(_url(world.project, private.pk)).status_code == 404


def test_list_costs_the_same_queries_whatever_the_page_size(world):
    client = client_for(world.owner)
    for _ in range(6):
        backend = make_backend(world.project, world.owner, config=TEXT_CONFIG)
        LabelStudioAnnotation.objects.create(backend=backend, annotation_id=1, label="Positive")
    counts = []
    for size in (2, 6):
        with CaptureQueriesContext(connection) as queries:
            r = client.get(_url(world.project) + f"?page_size={size}")
        assert r.status_code == 200 and len(r.json()["data"]["items"]) == size
        assert {b["annotation_count"] for b in r.json()["data"]["items"]} == {1}
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_annotations_versions_and_training_from_the_api(world, settings):
    from apps.tasks.runner import task_run

    settings.TASK_HEARTBEAT_INTERVAL_S = 3600
    backend = make_backend(
        world.project, world.owner, config=TEXT_CONFIG, train_params={"epochs": 3}
    )
    client = client_for(world.owner)
    r = client.post(_url(world.project, backend.pk, "train"))
    assert r.status_code == 422 and r.json()["error"]["message"] == "No annotations found."
    for i, (text, label) in enumerate([("good", "Positive"), ("bad", "Negative")], start=1):
        LabelStudioAnnotation.objects.create(
            backend=backend,
            annotation_id=i,
            task_id=i,
            task_data={"text": text},
            result=[
                {
                    "from_name": "sentiment",
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": [label]},
                }
            ],
            label=label,
        )
    r = client.get(_url(world.project, backend.pk, "annotations"))
    assert r.status_code == 200
    assert [(a["annotation_id"], a["label"]) for a in r.json()["data"]["items"]] == [
        (1, "Positive"),
        (2, "Negative"),
    ]
    r = client.post(_url(world.project, backend.pk, "train"))
    assert r.status_code == 201 and r.json()["data"]["created"] is True
    task_id = r.json()["data"]["task_id"]
    r = client.post(_url(world.project, backend.pk, "train"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "TRAINING_IN_PROGRESS"
    # The run is an ordinary task of the project.
    r = client.get(f"/api/projects/{world.project.pk}/tasks/{task_id}")
    assert r.status_code == 200 and r.json()["data"]["kind"] == "labelstudio_train"
    task_run(task_id)
    assert Task.objects.get(pk=task_id).state == "finished"
    r = client.get(_url(world.project, backend.pk, "versions"))
    (version,) = r.json()["data"]
    assert (version["number"], version["model_version"], version["labels"]) == (
        1,
        "1.1.0",
        ["Positive", "Negative"],
    )
    assert version["checkpoint_id"] and version["metrics"]["samples"] == 2
    assert client.get(_url(world.project, backend.pk)).json()["data"]["model_version"] == "1.1.0"


def test_training_task_kind_validates_its_backend(world):
    backend = make_backend(world.project, world.owner)
    other_model = _model(world)
    client = client_for(world.owner)
    for params, cluster in [({}, backend.cluster), ({"backend_id": backend.pk}, other_model)]:
        r = client.post(
            f"/api/projects/{world.project.pk}/tasks",
            {
                "name": "t",
                "kind": "labelstudio_train",
                "cluster_id": str(cluster.pk),
                "params": params,
            },
            format="json",
        )
        assert r.status_code == 422, r.content


def test_deleting_the_model_leaves_the_backend_unbound(world):
    from apps.clusters.services import cluster_delete
    from tests.mlbackend.labelstudio_helpers import ls_task, predict_body
    from tests.mlbackend.test_labelstudio_protocol import LabelStudio

    backend = make_backend(world.project, world.owner, config=TEXT_CONFIG)
    cluster_delete(cluster=backend.cluster)
    r = LabelStudio(backend.pk).post(
        "predict", predict_body([ls_task(1, {"text": "x"})], TEXT_CONFIG)
    )
    assert r.status_code == 409 and "no model" in r.json()["detail"]
    r = client_for(world.owner).get(_url(world.project, backend.pk))
    assert r.status_code == 200 and r.json()["data"]["cluster_id"] is None


def test_admin_pages_show_backends_and_annotations_but_no_secrets(world):
    from django.test import Client

    backend = make_backend(world.project, world.owner, basic_auth=("ls", "pw-secret-123"))
    LabelStudioBackend.objects.filter(pk=backend.pk).update(access_token="tok-should-not-show")
    annotation = LabelStudioAnnotation.objects.create(
        backend=backend,
        annotation_id=5,
        task_data={"image": "/data/upload/1/a.png"},
        label="Vertical",
    )
    client = Client()
    client.force_login(world.global_admin)
    page = client.get(f"/admin/mlbackend/labelstudiobackend/{backend.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    stored_hash = LabelStudioBackend.objects.get(pk=backend.pk).basic_auth_password
    assert "tok-should-not-show" not in html and stored_hash not in html
    assert client.get("/admin/mlbackend/labelstudiobackend/?q=ls").status_code == 200
    page = client.get(f"/admin/mlbackend/labelstudioannotation/{annotation.pk}/change/")
    assert page.status_code == 200 and "Vertical" in page.content.decode()
