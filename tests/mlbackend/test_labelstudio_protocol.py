"""The Label Studio ML backend protocol at /ml/<id>/: the requests Label Studio 1.23 sends (headers
and bodies, see labelstudio_helpers), the exact answers, bad input in the protocol's format, and
the whole flow setup -> predict -> annotation webhooks -> START_TRAINING -> is_training -> new
version -> predict with it."""

import json

import pytest
from django.test import Client

from apps.mlbackend.labelstudio import runtime
from apps.mlbackend.models import LabelStudioAnnotation, LabelStudioBackend
from apps.tasks.models import Task
from apps.tasks.runner import task_run
from tests.mlbackend.labelstudio_helpers import (
    IMAGE_CONFIG,
    LS_PROJECT_UID,
    LS_TOKEN,
    TEXT_CONFIG,
    TaskDataServer,
    data_uri,
    ls_annotation,
    ls_headers,
    ls_task,
    make_backend,
    predict_body,
    setup_body,
    stripes_png,
    webhook_body,
)

pytestmark = pytest.mark.django_db

FAST_TRAINING = {"epochs": 60, "learning_rate": 0.01, "batch_size": 8}


@pytest.fixture(autouse=True)
def _runner_in_test_transaction(settings):
    # Training runs are executed with task_run() inside the test's transaction, which a
    # heartbeat thread (its own connection) cannot see.
    from apps.mlbackend.labelstudio.connect import clear_check_cache

    settings.TASK_HEARTBEAT_INTERVAL_S = 3600
    runtime.clear_cache()
    clear_check_cache()
    yield
    runtime.clear_cache()
    clear_check_cache()


class LabelStudio:
    """Sends what Label Studio sends to one backend URL."""

    def __init__(self, backend_id: str, basic_auth=None):
        self.base = f"/ml/{backend_id}"
        self.client = Client()
        self.headers = ls_headers(basic_auth)

    def get(self, route, **query):
        return self.client.get(f"{self.base}/{route}", query, **self.headers)

    def post(self, route, body):
        return self.client.post(
            f"{self.base}/{route}",
            json.dumps(body),
            content_type="application/json",
            **self.headers,
        )


def _no_connection_check(monkeypatch):
    """/setup's check against Label Studio (test_labelstudio_connect.py) needs a Label Studio;
    these tests are about what /setup stores."""
    from apps.mlbackend.labelstudio import services

    monkeypatch.setattr(services, "check_label_studio", lambda **kwargs: None)


def _no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(runtime, "load_weights", refuse)


# --- health, setup, versions, metrics ------------------------------------------------------------


def test_health_and_root_answer_up_without_loading_a_model(world, monkeypatch):
    backend = make_backend(world.project, world.owner)
    _no_model_loading(monkeypatch)
    ls = LabelStudio(backend.pk)
    for route in ("health", ""):
        r = ls.get(route)
        assert r.status_code == 200 and r["Content-Type"] == "application/json"
        assert r.json() == {
            "status": "UP",
            "model_class": "OrchardClassifier",
            "model_version": "1.0.0",
        }


def test_setup_adopts_config_host_and_token_without_loading_a_model(world, monkeypatch):
    backend = make_backend(world.project, world.owner, config="")
    _no_model_loading(monkeypatch)
    _no_connection_check(monkeypatch)
    r = LabelStudio(backend.pk).post(
        "setup", setup_body(IMAGE_CONFIG, "http://ls.example.com:8080/")
    )
    assert r.status_code == 200
    assert r.json() == {"model_version": "1.0.0"}
    backend.refresh_from_db()
    assert backend.label_config == IMAGE_CONFIG
    assert backend.interface["labels"] == ["Horizontal", "Vertical"]
    assert backend.label_studio_url == "http://ls.example.com:8080"
    assert backend.access_token == LS_TOKEN
    assert backend.ls_project == LS_PROJECT_UID
    assert backend.last_setup_at is not None


@pytest.mark.parametrize(
    "schema, detail",
    [
        (
            IMAGE_CONFIG.replace(
                '<Choice value="Vertical"/>', '<Choice value="V"/><Choice value="D"/>'
            ),
            "3 choices but the model has 2 outputs",
        ),
        ("<View><Image name='i' value='$image'/>", "not well-formed"),
        ('<!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]><View>&x;</View>', "DOCTYPE"),
        (
            "<View><Image name='i' value='$image'/><KeyPointLabels name='k' toName='i'/></View>",
            "only image and text classification",
        ),
    ],
)
def test_setup_with_a_wrong_label_config_answers_400_and_changes_nothing(world, schema, detail):
    backend = make_backend(world.project, world.owner)
    r = LabelStudio(backend.pk).post("setup", setup_body(schema))
    assert r.status_code == 400
    body = r.json()
    assert body["status"] == 400 and detail in body["detail"], body
    assert set(body) == {"status", "detail"}
    fresh = LabelStudioBackend.objects.get(pk=backend.pk)
    assert fresh.label_config == IMAGE_CONFIG and fresh.label_studio_url == ""


def test_setup_hostname_is_pinned_by_allowed_hosts_and_a_new_host_drops_the_token(
    world, monkeypatch
):
    _no_connection_check(monkeypatch)
    pinned = make_backend(world.project, world.owner, allowed_hosts=["ls.example.com"])
    ls = LabelStudio(pinned.pk)
    assert (
        ls.post("setup", setup_body(IMAGE_CONFIG, "http://ls.example.com:8080")).status_code == 200
    )
    r = ls.post("setup", setup_body(IMAGE_CONFIG, "http://attacker.example.net"))
    assert r.status_code == 400
    assert r.json() == {
        "status": 400,
        "detail": "hostname: attacker.example.net is not among this backend's allowed hosts.",
    }
    pinned.refresh_from_db()
    assert (pinned.label_studio_url, pinned.access_token) == (
        "http://ls.example.com:8080",
        LS_TOKEN,
    )

    # Not pinned: another host may be named, but the token of the old host is forgotten.
    unpinned = make_backend(world.project, world.owner)
    ls = LabelStudio(unpinned.pk)
    assert ls.post("setup", setup_body(IMAGE_CONFIG, "http://ls.example.com")).status_code == 200
    body = setup_body(IMAGE_CONFIG, "http://elsewhere.example.net")
    del body["access_token"]
    assert ls.post("setup", body).status_code == 200
    unpinned.refresh_from_db()
    assert (unpinned.label_studio_url, unpinned.access_token) == (
        "http://elsewhere.example.net",
        "",
    )
    for bad in ("ftp://ls.example.com", "http://user:pw@ls.example.com", 42):
        r = ls.post("setup", setup_body(IMAGE_CONFIG, bad))
        assert r.status_code == 400 and r.json()["detail"].startswith("hostname: "), bad


def test_versions_get_and_old_post_and_metrics(world):
    backend = make_backend(world.project, world.owner)
    ls = LabelStudio(backend.pk)
    r = ls.get("versions")
    assert r.status_code == 200 and r.json() == {"versions": ["1.0.0"]}
    r = ls.post("versions", {"project": LS_PROJECT_UID})
    assert r.status_code == 200 and r.json() == {"versions": ["1.0.0"]}
    r = ls.get("metrics")
    assert r.status_code == 200 and r.json() == {"model_version": "1.0.0", "annotations": 0}


# --- predict -------------------------------------------------------------------------------------


def _check_predictions(body, interface, n, version):
    assert set(body) == {"results", "model_version"} and body["model_version"] == version
    results = body["results"]
    assert isinstance(results, list) and len(results) == n
    labels = []
    for item in results:
        assert set(item) == {"result", "score", "model_version"}
        assert item["model_version"] == version and 0.0 <= item["score"] <= 1.0
        (region,) = item["result"]
        assert region == {
            "from_name": interface[0],
            "to_name": interface[1],
            "type": "choices",
            "value": {"choices": [region["value"]["choices"][0]]},
            "score": item["score"],
        }
        labels.append(region["value"]["choices"][0])
    return labels


def test_predict_images_fetched_from_label_studio_with_its_token(world):
    files = {f"/data/upload/7/{i}.png": stripes_png(i % 2 == 0) for i in range(3)}
    with TaskDataServer(files, require_token=LS_TOKEN) as server:
        backend = make_backend(world.project, world.owner, allow_private_networks=True)
        ls = LabelStudio(backend.pk)
        assert ls.post("setup", setup_body(IMAGE_CONFIG, server.url)).status_code == 200
        tasks = [ls_task(i + 1, {"image": path}) for i, path in enumerate(files)]
        r = ls.post("predict", predict_body(tasks, IMAGE_CONFIG))
        assert r.status_code == 200, r.content
        labels = _check_predictions(r.json(), ("choice", "image"), 3, "1.0.0")
        assert set(labels) <= {"Horizontal", "Vertical"}
        # /setup checked the token on Label Studio's API, then the files were fetched with it.
        assert server.requests[0][0] == "/api/projects/7/"
        assert sorted(path for path, _ in server.requests[1:]) == sorted(files)
        assert all(h["Authorization"] == f"Token {LS_TOKEN}" for _, h in server.requests)


def test_predict_text_and_interactive_context(world):
    backend = make_backend(world.project, world.owner, config=TEXT_CONFIG)
    ls = LabelStudio(backend.pk)
    tasks = [ls_task(1, {"text": "What a great movie"}), ls_task(2, {"text": "Awful."})]
    r = ls.post("predict", predict_body(tasks, TEXT_CONFIG))
    assert r.status_code == 200, r.content
    _check_predictions(r.json(), ("sentiment", "text"), 2, "1.0.0")
    # Interactive annotating: one task and a context; results[0] is used.
    context = {"result": [], "user": 1}
    r = ls.post("predict", predict_body(tasks[:1], TEXT_CONFIG, context=context))
    assert r.status_code == 200
    _check_predictions(r.json(), ("sentiment", "text"), 1, "1.0.0")


def test_predict_refuses_urls_outside_the_policy_task_by_task(world, monkeypatch):
    _no_connection_check(monkeypatch)
    backend = make_backend(world.project, world.owner)
    ls = LabelStudio(backend.pk)
    ls.post("setup", setup_body(IMAGE_CONFIG, "http://localhost:8080"))
    cases = [
        ("http://169.254.169.254/latest/meta-data/", "not allowed"),
        ("file:///etc/passwd", "scheme"),
        ("/data/upload/7/a.png", "private, loopback"),  # localhost without the allowance
    ]
    tasks = [ls_task(i + 1, {"image": url}) for i, (url, _) in enumerate(cases)]
    r = ls.post("predict", predict_body(tasks, IMAGE_CONFIG))
    assert r.status_code == 200, r.content
    for item, (url, detail) in zip(r.json()["results"], cases, strict=True):
        assert item["result"] == [] and detail in item["error"], (url, item)
        assert "model_version" not in item  # Label Studio may predict it again later


@pytest.mark.parametrize(
    "body, status, detail",
    [
        ({"tasks": []}, 400, "tasks: must be a non-empty list"),
        ({"tasks": "x"}, 400, "tasks: must be a non-empty list"),
        (
            {"tasks": [{"id": 1, "data": {"image": "x"}}], "label_config": "<View>"},
            400,
            "label_config",
        ),
        ([1, 2], 400, "must be a JSON object"),
    ],
)
def test_predict_bad_input(world, body, status, detail):
    backend = make_backend(world.project, world.owner)
    r = LabelStudio(backend.pk).post("predict", body)
    assert r.status_code == status
    assert r.json()["status"] == status and detail in r.json()["detail"], r.json()


@pytest.mark.parametrize(
    "task, detail",
    [
        ({"id": 1}, "must be an object with a `data` object"),
        ({"id": 3, "data": {"img": "x"}}, "task 3 has no 'image'"),
        ({"id": 3, "data": {"image": "data:image/png;base64,AAAA"}}, "not a readable image"),
    ],
)
def test_predict_a_bad_task_gets_its_error_and_the_others_their_predictions(world, task, detail):
    backend = make_backend(world.project, world.owner)
    good = ls_task(9, {"image": data_uri(stripes_png(True))})
    r = LabelStudio(backend.pk).post("predict", predict_body([good, task], IMAGE_CONFIG))
    assert r.status_code == 200, r.content
    first, second = r.json()["results"]
    assert len(first["result"]) == 1 and first["model_version"] == "1.0.0"
    assert second["result"] == [] and detail in second["error"], second


# --- errors of the surface -----------------------------------------------------------------------


def test_malformed_json_unknown_backend_and_methods(world):
    backend = make_backend(world.project, world.owner)
    client = Client()
    for route in ("setup", "predict", "webhook", "train"):
        r = client.post(f"/ml/{backend.pk}/{route}", "{not json", content_type="application/json")
        assert r.status_code == 400 and r["Content-Type"] == "application/json"
        assert r.json()["status"] == 400 and r.json()["detail"].startswith("Malformed JSON")
    r = client.get("/ml/mlb-000000000000/health")
    assert r.status_code == 404 and r.json() == {"status": 404, "detail": "ML backend not found."}
    r = client.post("/ml/mlb-000000000000/predict", "{}", content_type="application/json")
    assert r.status_code == 404 and r.json()["status"] == 404
    r = client.delete(f"/ml/{backend.pk}/predict")
    assert r.status_code == 405 and r.json()["status"] == 405
    for method, path in [("get", "job_status"), ("post", "delete"), ("get", "health/x")]:
        r = getattr(client, method)(f"/ml/{backend.pk}/{path}")
        assert r.status_code == 404 and r["Content-Type"] == "application/json"
        assert r.json() == {
            "status": 404,
            "detail": f"No such ML backend route: /ml/{backend.pk}/{path}",
        }
    # JSON without a Content-Type is still JSON (curl, scripts).
    r = client.post(f"/ml/{backend.pk}/versions", b'{"project": "1.2"}', content_type="")
    assert r.status_code == 200


def test_oversized_body_answers_413_in_the_protocol_format(world, settings):
    backend = make_backend(world.project, world.owner)
    settings.API_MAX_BODY_BYTES = 1000
    r = LabelStudio(backend.pk).post("predict", {"tasks": [{"data": {"text": "x" * 2000}}]})
    assert r.status_code == 413
    assert r.json()["status"] == 413 and "exceeds" in r.json()["detail"]


def test_basic_auth_per_backend(world, settings):
    # Many wrong credentials from one client on purpose; their throttling is tested in
    # tests/security/test_throttle_credentials.py.
    settings.AUTH_FAILURE_RATE = "100/min"
    backend = make_backend(world.project, world.owner, basic_auth=("ls-user", "pw-1234567"))
    other = make_backend(world.project, world.owner, basic_auth=("ls-user", "another-pw"))
    for auth in (None, ("ls-user", "wrong"), ("someone", "pw-1234567"), ("ls-user", "another-pw")):
        for route in ("health", "versions"):
            r = LabelStudio(backend.pk, basic_auth=auth).get(route)
            assert r.status_code == 401, (auth, route)
            assert r.json()["status"] == 401 and r["WWW-Authenticate"].startswith("Basic ")
        r = LabelStudio(backend.pk, basic_auth=auth).post(
            "webhook",
            webhook_body(
                "ANNOTATION_CREATED",
                IMAGE_CONFIG,
                ls_annotation(1, 1, "choice", "image", "Vertical"),
                ls_task(1, {"image": "x"}),
            ),
        )
        assert r.status_code == 401
    assert not LabelStudioAnnotation.objects.exists()
    client = Client()
    r = client.get(f"/ml/{backend.pk}/health", HTTP_AUTHORIZATION="Basic !!!")
    assert r.status_code == 401 and "Malformed" in r.json()["detail"]
    r = client.get(f"/ml/{backend.pk}/health", HTTP_AUTHORIZATION="Bearer abc")
    assert r.status_code == 401
    assert (
        LabelStudio(backend.pk, basic_auth=("ls-user", "pw-1234567")).get("health").status_code
        == 200
    )
    assert (
        LabelStudio(other.pk, basic_auth=("ls-user", "another-pw")).get("health").status_code == 200
    )
    # Credentials changed in Orchard: the old ones stop working at once.
    from apps.mlbackend.labelstudio.services import backend_update

    backend_update(backend=backend, basic_auth_user="ls-user", basic_auth_password="new-pw-0987")
    assert (
        LabelStudio(backend.pk, basic_auth=("ls-user", "pw-1234567")).get("health").status_code
        == 401
    )
    assert (
        LabelStudio(backend.pk, basic_auth=("ls-user", "new-pw-0987")).get("health").status_code
        == 200
    )


# --- webhooks ------------------------------------------------------------------------------------


def test_annotation_webhooks_store_update_and_delete(world):
    backend = make_backend(world.project, world.owner, config=TEXT_CONFIG)
    ls = LabelStudio(backend.pk)
    task = ls_task(11, {"text": "lovely"})
    created = ls_annotation(101, 11, "sentiment", "text", "Positive")
    r = ls.post("webhook", webhook_body("ANNOTATION_CREATED", TEXT_CONFIG, created, task))
    assert r.status_code == 201
    assert r.json() == {
        "result": {"annotation_id": 101, "label": "Positive", "annotations": 1},
        "status": "ok",
    }
    row = LabelStudioAnnotation.objects.get(backend=backend, annotation_id=101)
    assert (row.task_id, row.task_data, row.label, row.ls_project) == (
        11,
        {"text": "lovely"},
        "Positive",
        "7",
    )

    updated = ls_annotation(101, 11, "sentiment", "text", "Negative")
    r = ls.post("webhook", webhook_body("ANNOTATION_UPDATED", TEXT_CONFIG, updated, task))
    assert r.status_code == 201 and r.json()["result"]["label"] == "Negative"
    assert LabelStudioAnnotation.objects.get(pk=row.pk).label == "Negative"

    r = ls.post(
        "webhook",
        {
            "action": "ANNOTATIONS_DELETED",
            "annotations": [{"id": 101}, {"id": 999}],
            "project": {"id": 7},
        },
    )
    assert r.status_code == 201 and r.json() == {"result": {"deleted": 1}, "status": "ok"}
    assert not LabelStudioAnnotation.objects.exists()


@pytest.mark.parametrize(
    "body, status, answer",
    [
        ({"action": "PROJECT_UPDATED", "project": {"id": 7}}, 200, {"status": "Unknown event"}),
        ({"project": {"id": 7}}, 400, {"status": 400, "detail": "action: is required."}),
        ({"action": "ANNOTATION_CREATED", "annotation": {"result": []}}, 400, None),
        ({"action": "ANNOTATION_CREATED", "annotation": "x"}, 400, None),
        ({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "1"}]}, 400, None),
        (
            {"action": "START_TRAINING", "project": {"id": 7}},
            400,
            {"status": 400, "detail": "No annotations found."},
        ),
        ("ANNOTATION_CREATED", 400, None),
    ],
)
def test_webhook_bad_and_unknown_events(world, body, status, answer):
    backend = make_backend(world.project, world.owner)
    r = LabelStudio(backend.pk).post("webhook", body)
    assert r.status_code == status, r.content
    if answer is not None:
        assert r.json() == answer
    else:
        assert r.json()["status"] == 400
    assert not LabelStudioAnnotation.objects.exists() and not Task.objects.exists()


def test_old_train_route(world):
    backend = make_backend(world.project, world.owner, config=TEXT_CONFIG)
    ls = LabelStudio(backend.pk)
    r = ls.post(
        "train", {"annotations": [], "project": LS_PROJECT_UID, "label_config": TEXT_CONFIG}
    )
    assert r.status_code == 400 and r.json() == {"status": 400, "detail": "No annotations found."}
    tasks = [
        ls_task(
            1, {"text": "good"}, annotations=[ls_annotation(1, 1, "sentiment", "text", "Positive")]
        ),
        ls_task(
            2, {"text": "bad"}, annotations=[ls_annotation(2, 2, "sentiment", "text", "Negative")]
        ),
    ]
    body = {
        "annotations": tasks,
        "project": LS_PROJECT_UID,
        "label_config": TEXT_CONFIG,
        "params": {"login": None, "password": None},
    }
    r = ls.post("train", body)
    assert r.status_code == 201
    job = r.json()["job"]
    assert set(r.json()) == {"job"}
    task = Task.objects.get(pk=job)
    assert (task.kind, task.state, task.params) == (
        "labelstudio_train",
        "queued",
        {"backend_id": backend.pk},
    )
    assert LabelStudioAnnotation.objects.filter(backend=backend).count() == 2
    # Pressed again while queued: the same job, not a second one.
    assert ls.post("train", body).json() == {"job": job}
    r = ls.get("is_training", project=LS_PROJECT_UID)
    assert r.status_code == 200
    assert r.json() == {
        "is_training": True,
        "model_version": "1.0.0",
        "job": job,
        "status": "queued",
        "progress": 0.0,
    }


# --- the whole flow ------------------------------------------------------------------------------


def _annotate(ls, config, from_name, to_name, items, start_id=1):
    for offset, (data, label) in enumerate(items):
        i = start_id + offset
        body = webhook_body(
            "ANNOTATION_CREATED",
            config,
            ls_annotation(i, i, from_name, to_name, label),
            ls_task(i, data),
        )
        r = ls.post("webhook", body)
        assert r.status_code == 201, r.content


def _train(ls):
    r = ls.post("webhook", webhook_body("START_TRAINING", IMAGE_CONFIG))
    assert r.status_code == 201, r.content
    job = r.json()["result"]["job"]
    assert r.json()["status"] == "ok"
    assert ls.get("is_training").json()["is_training"] is True
    task_run(job)
    task = Task.objects.get(pk=job)
    assert task.state == "finished", (task.error, task.traceback)
    status = ls.get("is_training").json()
    assert status["is_training"] is False and status["status"] == "finished"
    return task


def test_full_flow_image_classification(world):
    files = {}
    items = []
    for i in range(16):
        vertical = i % 2 == 0
        path = f"/data/upload/7/train-{i}.png"
        files[path] = stripes_png(vertical, phase=i // 2 % 2)
        items.append(({"image": path}, "Vertical" if vertical else "Horizontal"))
    tests = {f"/data/upload/7/test-{i}.png": stripes_png(i % 2 == 0, phase=1) for i in range(4)}
    with TaskDataServer({**files, **tests}, require_token=LS_TOKEN) as server:
        backend = make_backend(
            world.project,
            world.owner,
            allow_private_networks=True,
            train_params=FAST_TRAINING,
        )
        ls = LabelStudio(backend.pk)
        assert ls.post("setup", setup_body(IMAGE_CONFIG, server.url)).json() == {
            "model_version": "1.0.0"
        }
        test_tasks = [ls_task(100 + i, {"image": path}) for i, path in enumerate(tests)]
        before = ls.post("predict", predict_body(test_tasks, IMAGE_CONFIG))
        assert before.status_code == 200
        _check_predictions(before.json(), ("choice", "image"), 4, "1.0.0")

        _annotate(ls, IMAGE_CONFIG, "choice", "image", items)
        task = _train(ls)
        assert task.result["samples"] == 16 and task.result["model_version"] == "1.1.0"
        assert ls.get("versions").json() == {"versions": ["1.1.0"]}
        assert ls.post("setup", setup_body(IMAGE_CONFIG, server.url)).json() == {
            "model_version": "1.1.0"
        }

        after = ls.post("predict", predict_body(test_tasks, IMAGE_CONFIG))
        labels = _check_predictions(after.json(), ("choice", "image"), 4, "1.1.0")
        assert labels == ["Vertical", "Horizontal", "Vertical", "Horizontal"]

        # More annotations, a second run: 1.2.0; an older version can still be asked for.
        _annotate(ls, IMAGE_CONFIG, "choice", "image", items[:4], start_id=50)
        _train(ls)
        assert ls.get("versions").json() == {"versions": ["1.1.0", "1.2.0"]}
        body = {**predict_body(test_tasks[:1], IMAGE_CONFIG), "model_version": "1.1.0"}
        assert ls.post("predict", body).json()["model_version"] == "1.1.0"
        assert (
            ls.post("predict", predict_body(test_tasks[:1], IMAGE_CONFIG)).json()["model_version"]
            == "1.2.0"
        )

    backend.refresh_from_db()
    assert backend.version == 2 and backend.checkpoint is not None
    assert backend.cluster.version == 2  # the bound model itself was trained


def test_full_flow_text_classification_with_a_skipped_task(world):
    positive = ["great film", "loved it", "wonderful acting", "great fun", "brilliant and great"]
    negative = ["awful film", "hated it", "boring acting", "awful mess", "dull and awful"]
    items = [({"text": t}, "Positive") for t in positive] + [
        ({"text": t}, "Negative") for t in negative
    ]
    backend = make_backend(
        world.project, world.owner, config=TEXT_CONFIG, train_params=FAST_TRAINING
    )
    ls = LabelStudio(backend.pk)
    _annotate(ls, TEXT_CONFIG, "sentiment", "text", items)
    # An annotation of another control (not ours) is stored but not trained on.
    other = ls_annotation(99, 99, "topic", "text", "Positive")
    ls.post(
        "webhook",
        webhook_body("ANNOTATION_CREATED", TEXT_CONFIG, other, ls_task(99, {"text": "x"})),
    )
    task = _train(ls)
    assert task.result["samples"] == 10
    tasks = [ls_task(1, {"text": "a great film"}), ls_task(2, {"text": "an awful film"})]
    labels = _check_predictions(
        ls.post("predict", predict_body(tasks, TEXT_CONFIG)).json(),
        ("sentiment", "text"),
        2,
        "1.1.0",
    )
    assert labels == ["Positive", "Negative"]


def test_training_skips_task_data_it_may_not_fetch(world):
    backend = make_backend(world.project, world.owner, train_params={"epochs": 2})
    ls = LabelStudio(backend.pk)
    items = [
        ({"image": data_uri(stripes_png(True))}, "Vertical"),
        ({"image": "http://10.0.0.1/secret.png"}, "Horizontal"),
    ]
    _annotate(ls, IMAGE_CONFIG, "choice", "image", items)
    task = _train(ls)
    assert task.result["samples"] == 1 and task.result["skipped_count"] == 1
    assert "not allowed" in task.result["skipped"][0]["error"]


def test_annotation_webhooks_can_start_training(world):
    backend = make_backend(world.project, world.owner, config=TEXT_CONFIG, train_on_annotation=True)
    ls = LabelStudio(backend.pk)
    body = webhook_body(
        "ANNOTATION_CREATED",
        TEXT_CONFIG,
        ls_annotation(1, 1, "sentiment", "text", "Positive"),
        ls_task(1, {"text": "ok"}),
    )
    job = ls.post("webhook", body).json()["result"]["job"]
    body["annotation"]["id"] = 2
    assert ls.post("webhook", body).json()["result"]["job"] == job  # one run at a time
    assert Task.objects.filter(kind="labelstudio_train").count() == 1
