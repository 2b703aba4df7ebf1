"""Credentials of a protected backend: webhooks through the secret URL (Label Studio sends them
without Basic credentials), /setup that cannot re-point a protected backend without them, and a
keyed-hash check fast enough for Label Studio's 1 s health timeout. Training reads the project's
annotations from Label Studio's API, so it does not depend on webhooks having arrived."""

import pytest

from apps.mlbackend.labelstudio import auth, runtime
from apps.mlbackend.labelstudio.connect import clear_check_cache
from apps.mlbackend.models import LabelStudioAnnotation, LabelStudioBackend
from apps.tasks.models import Task
from apps.tasks.runner import task_run
from tests.conftest import client_for
from tests.mlbackend.labelstudio_helpers import (
    LS_TOKEN,
    TEXT_CONFIG,
    LabelStudioClient,
    TaskDataServer,
    export_path,
    json_bytes,
    ls_annotation,
    ls_task,
    make_backend,
    predict_body,
    setup_body,
    webhook_body,
)

pytestmark = pytest.mark.django_db

CREDENTIALS = ("label-studio", "a-long-backend-password")


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.TASK_HEARTBEAT_INTERVAL_S = 3600  # task_run() inside the test's transaction
    runtime.clear_cache()
    clear_check_cache()
    yield
    runtime.clear_cache()
    clear_check_cache()


def _annotation_webhook(annotation_id=1, label="Positive"):
    return webhook_body(
        "ANNOTATION_CREATED",
        TEXT_CONFIG,
        ls_annotation(annotation_id, annotation_id, "sentiment", "text", label),
        ls_task(annotation_id, {"text": "great"}),
    )


def test_webhooks_without_credentials_are_accepted_under_the_secret_url_only(world):
    backend = make_backend(world.project, world.owner, config=TEXT_CONFIG, basic_auth=CREDENTIALS)
    # What Label Studio does: the webhook it creates is <pasted URL>/webhook, sent without Basic.
    plain = LabelStudioClient(backend.pk)
    assert plain.post("webhook", _annotation_webhook()).status_code == 401
    secret = LabelStudioClient(backend.pk, secret=backend.webhook_secret)
    r = secret.post("webhook", _annotation_webhook())
    assert r.status_code == 201 and r.json()["status"] == "ok", r.content
    assert LabelStudioAnnotation.objects.filter(backend=backend).count() == 1
    wrong = LabelStudioClient(backend.pk, secret=backend.webhook_secret[:-1] + "x")
    r = wrong.post("webhook", _annotation_webhook(2))
    assert r.status_code == 401 and r.json()["status"] == 401
    assert LabelStudioAnnotation.objects.filter(backend=backend).count() == 1
    # Every other route still needs the credentials, under either URL.
    assert secret.get("health").status_code == 401
    with_credentials = LabelStudioClient(backend.pk, CREDENTIALS, secret=backend.webhook_secret)
    assert with_credentials.get("health").status_code == 200


def test_setup_cannot_repoint_a_protected_backend_without_its_credentials(world):
    backend = make_backend(world.project, world.owner, config=TEXT_CONFIG, basic_auth=CREDENTIALS)
    before = LabelStudioBackend.objects.get(pk=backend.pk)
    for client in (
        LabelStudioClient(backend.pk),
        LabelStudioClient(backend.pk, secret=backend.webhook_secret),
        LabelStudioClient(backend.pk, ("label-studio", "wrong")),
    ):
        r = client.post("setup", setup_body(TEXT_CONFIG, "http://attacker.example.net"))
        assert r.status_code == 401 and r["WWW-Authenticate"].startswith("Basic")
    after = LabelStudioBackend.objects.get(pk=backend.pk)
    assert (after.label_studio_url, after.access_token, after.ls_project) == (
        before.label_studio_url,
        before.access_token,
        before.ls_project,
    )


def test_the_secret_url_is_shown_to_those_who_may_change_the_backend(world):
    backend = make_backend(world.project, world.owner, config=TEXT_CONFIG, basic_auth=CREDENTIALS)
    url = f"/api/mlbackend/{world.project.pk}/backends/{backend.pk}"
    data = client_for(world.owner).get(url).json()["data"]
    assert data["secret_url"] == f"http://testserver/ml/{backend.pk}/s/{backend.webhook_secret}/"
    assert client_for(world.viewer).get(url).json()["data"]["secret_url"] is None


def test_credentials_are_checked_by_a_keyed_hash_not_a_password_hasher(world, monkeypatch):
    """Label Studio gives /health 1 s and a login-grade password hasher took 2.2 s: backend
    credentials are an HMAC-SHA256 keyed with the server secret (constant-time compare), and no
    password hasher runs when they are checked. (Its cost is measured in bench/, not asserted.)"""
    backend = make_backend(world.project, world.owner, config=TEXT_CONFIG, basic_auth=CREDENTIALS)
    fresh = LabelStudioBackend.objects.get(pk=backend.pk)
    assert fresh.basic_auth_password.startswith("hmac-sha256$")

    def no_hasher(*args, **kwargs):
        raise AssertionError("a password hasher ran for backend credentials")

    monkeypatch.setattr(auth, "check_password", no_hasher)
    ls = LabelStudioClient(backend.pk, CREDENTIALS)
    assert ls.get("health").status_code == 200  # the first request with these credentials
    header = ls.headers["HTTP_AUTHORIZATION"]
    auth.backend_authenticate(backend=fresh, authorization=header, client="127.0.0.1")
    wrong = LabelStudioClient(backend.pk, (CREDENTIALS[0], "not-the-password"))
    assert wrong.get("health").status_code == 401


def test_start_training_reads_the_annotations_from_label_studio(world):
    """No webhook ever reached Orchard (e.g. refused with 401 before): START_TRAINING still
    trains, on the annotated tasks Label Studio's API exports."""
    texts = {
        "Positive": ["great film", "loved it", "wonderful acting", "great fun", "brilliant"],
        "Negative": ["awful film", "hated it", "boring acting", "awful mess", "dull, awful"],
    }
    exported = []
    for label, items in texts.items():
        for text in items:
            i = len(exported) + 1
            annotation = ls_annotation(i, i, "sentiment", "text", label)
            exported.append(ls_task(i, {"text": text}, annotations=[annotation]))
    files = {
        "/api/projects/7/": json_bytes({"id": 7}),
        export_path(7): json_bytes(exported),
    }
    with TaskDataServer(files, require_token=LS_TOKEN) as server:
        backend = make_backend(
            world.project,
            world.owner,
            config=TEXT_CONFIG,
            basic_auth=CREDENTIALS,
            allow_private_networks=True,
            train_params={"epochs": 60, "learning_rate": 0.01, "batch_size": 8},
        )
        ls = LabelStudioClient(backend.pk, CREDENTIALS)
        assert ls.post("setup", setup_body(TEXT_CONFIG, server.url)).status_code == 200
        assert not LabelStudioAnnotation.objects.exists()
        secret = LabelStudioClient(backend.pk, secret=backend.webhook_secret)
        r = secret.post("webhook", webhook_body("START_TRAINING", TEXT_CONFIG))
        assert r.status_code == 201, r.content
        job = r.json()["result"]["job"]
        task_run(job)
        task = Task.objects.get(pk=job)
        assert task.state == "finished", (task.error, task.traceback)
        export_requests = [h for p, h in server.requests if p == export_path(7)]
        assert len(export_requests) == 1
        assert export_requests[0]["Authorization"] == f"Token {LS_TOKEN}"
    assert task.result["from_label_studio"] == {"read": 10, "error": None}
    assert task.result["samples"] == 10 and task.result["model_version"] == "1.1.0"
    assert LabelStudioAnnotation.objects.filter(backend=backend).count() == 10
    tasks = [ls_task(1, {"text": "a great film"}), ls_task(2, {"text": "an awful film"})]
    body = ls.post("predict", predict_body(tasks, TEXT_CONFIG)).json()
    assert [item["result"][0]["value"]["choices"][0] for item in body["results"]] == [
        "Positive",
        "Negative",
    ]


def test_training_goes_on_with_stored_annotations_when_the_export_fails(world):
    with TaskDataServer({"/api/projects/7/": json_bytes({"id": 7})}) as server:
        backend = make_backend(
            world.project,
            world.owner,
            config=TEXT_CONFIG,
            allow_private_networks=True,
            train_params={"epochs": 2},
        )
        ls = LabelStudioClient(backend.pk)
        assert ls.post("setup", setup_body(TEXT_CONFIG, server.url)).status_code == 200
        assert ls.post("webhook", _annotation_webhook()).status_code == 201
        job = ls.post("webhook", webhook_body("START_TRAINING", TEXT_CONFIG)).json()["result"]
        task_run(job["job"])
    task = Task.objects.get(pk=job["job"])
    assert task.state == "finished", task.error
    assert task.result["from_label_studio"] == {
        "read": 0,
        "error": "Could not fetch the task data.",
    }
    assert task.result["samples"] == 1
