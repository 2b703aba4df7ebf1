"""One backend URL used by two Label Studio projects: each gets its own label config, model,
annotations and versions (Label Studio names its project in every request), so that training
one never changes the other's predictions."""

import pytest

from apps.mlbackend.labelstudio import runtime
from apps.mlbackend.labelstudio.connect import clear_check_cache
from apps.mlbackend.models import LabelStudioBackend, LabelStudioProject
from apps.tasks.models import Task
from apps.tasks.runner import task_run
from tests.conftest import client_for
from tests.mlbackend.labelstudio_helpers import (
    TEXT_CONFIG,
    LabelStudioClient,
    ls_annotation,
    ls_task,
    make_backend,
    predict_body,
    setup_body,
    webhook_body,
)

pytestmark = pytest.mark.django_db

TOPIC_CONFIG = """<View>
  <Text name="body" value="$body"/>
  <Choices name="topic" toName="body">
    <Choice value="Sports"/>
    <Choice value="Politics"/>
  </Choices>
</View>"""
A, B = "7.1732300000", "9.1732300999"
TRAINING = {"epochs": 60, "learning_rate": 0.01, "batch_size": 8}


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.TASK_HEARTBEAT_INTERVAL_S = 3600  # task_run() inside the test's transaction
    runtime.clear_cache()
    clear_check_cache()
    yield
    runtime.clear_cache()
    clear_check_cache()


def _annotate(ls, config, control, obj, key, items, project_id, start):
    for offset, (text, label) in enumerate(items):
        i = start + offset
        body = webhook_body(
            "ANNOTATION_CREATED",
            config,
            ls_annotation(i, i, control, obj, label),
            ls_task(i, {key: text}),
            project_id=project_id,
        )
        assert ls.post("webhook", body).status_code == 201


def _train(ls, config, project_id):
    r = ls.post("webhook", webhook_body("START_TRAINING", config, project_id=project_id))
    assert r.status_code == 201, r.content
    job = r.json()["result"]["job"]
    task_run(job)
    task = Task.objects.get(pk=job)
    assert task.state == "finished", (task.error, task.traceback)
    return task


def _labels(ls, config, key, texts, project):
    tasks = [ls_task(i + 1, {key: t}) for i, t in enumerate(texts)]
    body = ls.post("predict", predict_body(tasks, config, project=project)).json()
    return [item["result"][0]["value"]["choices"][0] for item in body["results"]], body


def test_two_label_studio_projects_on_one_url_keep_their_models_and_labels_apart(world):
    backend = make_backend(world.project, world.owner, config="", train_params=TRAINING)
    ls = LabelStudioClient(backend.pk)
    assert ls.post("setup", setup_body(TEXT_CONFIG, project=A)).json() == {"model_version": "1.0.0"}
    assert ls.post("setup", setup_body(TOPIC_CONFIG, project=B)).json() == {
        "model_version": "1.0.0"
    }

    positive = ["great film", "loved it", "wonderful acting", "great fun", "brilliant"]
    negative = ["awful film", "hated it", "boring acting", "awful mess", "dull and awful"]
    items = [(t, "Positive") for t in positive] + [(t, "Negative") for t in negative]
    _annotate(ls, TEXT_CONFIG, "sentiment", "text", "text", items, 7, start=1)
    task_a = _train(ls, TEXT_CONFIG, 7)
    assert task_a.result["samples"] == 10 and task_a.result["model_version"] == "1.1.0"
    probe = ["a great film", "an awful film", "great acting", "awful, boring"]
    before, body_a = _labels(ls, TEXT_CONFIG, "text", probe, A)
    assert before == ["Positive", "Negative", "Positive", "Negative"]

    # Project B: one annotation of its own labels, trained on its own model.
    _annotate(ls, TOPIC_CONFIG, "topic", "body", "body", [("the match", "Sports")], 9, start=50)
    task_b = _train(ls, TOPIC_CONFIG, 9)
    assert task_b.result["samples"] == 1 and task_b.result["model_version"] == "1.1.0"
    row = LabelStudioProject.objects.get(backend=backend, ls_project="9")
    fresh = LabelStudioBackend.objects.get(pk=backend.pk)
    assert task_b.target_id == row.cluster_id != fresh.cluster_id
    assert fresh.cluster.version == 1 and fresh.version == 1  # A's model: trained once

    after, body_after = _labels(ls, TEXT_CONFIG, "text", probe, A)
    assert after == before and body_after == body_a  # same scores, same version
    topics, body_b = _labels(ls, TOPIC_CONFIG, "body", ["the match", "the vote"], B)
    assert set(topics) <= {"Sports", "Politics"} and body_b["model_version"] == "1.1.0"

    assert ls.post("versions", {"project": B}).json() == {"versions": ["1.1.0"]}
    assert ls.get("is_training", project=B).json()["model_version"] == "1.1.0"
    assert ls.post("versions", {"project": "12.1"}).json() == {"versions": ["1.0.0"]}
    data = (
        client_for(world.owner)
        .get(f"/api/mlbackend/{world.project.pk}/backends/{backend.pk}")
        .json()["data"]
    )
    assert data["ls_project"] == A and data["model_version"] == "1.1.0"
    (project_b,) = data["projects"]
    assert project_b["ls_project"] == "9" and project_b["model_version"] == "1.1.0"
    assert project_b["interface"]["labels"] == ["Sports", "Politics"]


def test_further_projects_are_bounded(world, settings):
    settings.LABELSTUDIO_MAX_PROJECTS = 2
    backend = make_backend(world.project, world.owner, config="")
    ls = LabelStudioClient(backend.pk)
    assert ls.post("setup", setup_body(TEXT_CONFIG, project="1.1")).status_code == 200
    assert ls.post("setup", setup_body(TEXT_CONFIG, project="2.1")).status_code == 200
    r = ls.post("setup", setup_body(TEXT_CONFIG, project="3.1"))
    assert r.status_code == 409 and "LABELSTUDIO_MAX_PROJECTS" in r.json()["detail"]
    assert LabelStudioProject.objects.filter(backend=backend).count() == 1


def test_deleting_the_backend_deletes_the_models_it_made_for_further_projects(world):
    from apps.clusters.models import Cluster

    backend = make_backend(world.project, world.owner, config="")
    ls = LabelStudioClient(backend.pk)
    ls.post("setup", setup_body(TEXT_CONFIG, project=A))
    ls.post("setup", setup_body(TOPIC_CONFIG, project=B))
    clone = LabelStudioProject.objects.get(backend=backend).cluster_id
    url = f"/api/mlbackend/{world.project.pk}/backends/{backend.pk}"
    assert client_for(world.owner).delete(url).status_code == 204
    assert not Cluster.objects.filter(pk=clone).exists()
    assert Cluster.objects.filter(pk=backend.cluster_id).exists()


def test_a_further_projects_failed_first_setup_leaves_nothing_behind(world):
    from apps.clusters.models import Cluster

    backend = make_backend(world.project, world.owner, config="")
    ls = LabelStudioClient(backend.pk)
    assert ls.post("setup", setup_body(TEXT_CONFIG, project=A)).status_code == 200
    models = Cluster.objects.count()
    three = TOPIC_CONFIG.replace(
        '<Choice value="Politics"/>', '<Choice value="P"/><Choice value="Q"/>'
    )
    r = ls.post("setup", setup_body(three, project=B))
    assert r.status_code == 400 and "3 choices but the model has 2 outputs" in r.json()["detail"]
    assert not LabelStudioProject.objects.exists() and Cluster.objects.count() == models


JUNK_PROJECTS = [[], {}, "[1, 2]", -3, "1e5", "abc.def", "7" * 64, "junk0", 7.5, True]


@pytest.mark.parametrize("junk", JUNK_PROJECTS, ids=repr)
def test_a_project_key_label_studio_never_sends_is_refused_and_makes_no_model(world, junk):
    """Each Label Studio project gets a model of its own: junk keys (lists, words, negative
    numbers) each made a cluster, even on a refused request, until the backend's project limit
    shut the real projects out (409)."""
    from apps.clusters.models import Cluster

    backend = make_backend(world.project, world.owner, config="")
    ls = LabelStudioClient(backend.pk)
    assert ls.post("setup", setup_body(TEXT_CONFIG, project=A)).status_code == 200
    models = Cluster.objects.count()
    task = ls_task(1, {"text": "hi"})
    for route, body in [
        ("setup", setup_body(TEXT_CONFIG, project=junk)),
        ("predict", predict_body([task], TEXT_CONFIG, project=junk)),
        ("webhook", {**webhook_body("START_TRAINING", TEXT_CONFIG), "project": {"id": junk}}),
        ("train", {"annotations": [task], "project": junk}),
        ("versions", {"project": junk}),
    ]:
        response = ls.post(route, body)
        assert response.status_code == 400, (route, response.content)
        assert "Label Studio project id" in response.json()["detail"], route
    assert not LabelStudioProject.objects.exists() and Cluster.objects.count() == models
    # What Label Studio does send still names its projects: the first, and a further one.
    for project in (A, 7, {"id": 7}, B, "9"):
        assert ls.post("versions", {"project": project}).status_code == 200, project


@pytest.mark.parametrize(
    ("route", "body"),
    [
        # Ids past 64 bits (a database overflow, a 500).
        (
            "webhook",
            {
                "action": "ANNOTATION_CREATED",
                "annotation": {"id": 10**30, "result": []},
                "task": {"id": 9, "data": {"text": "hi"}},
                "project": {"id": 7},
            },
        ),
        (
            "train",
            {"annotations": [{"id": 9, "data": {"text": "hi"}, "annotations": [{"id": 10**30}]}]},
        ),
        # A task's annotations that are not a list (a TypeError, a 500).
        ("train", {"annotations": [{"id": 9, "data": {"text": "hi"}, "annotations": 1}]}),
        ("train", {"annotations": [{"id": 9, "data": {"text": "hi"}, "annotations": True}]}),
    ],
)
def test_annotations_label_studio_never_sends_are_refused(world, route, body):
    from apps.mlbackend.models import LabelStudioAnnotation

    backend = make_backend(world.project, world.owner, config=TEXT_CONFIG)
    ls = LabelStudioClient(backend.pk)
    response = ls.post(route, body)
    assert response.status_code == 400, response.content
    assert set(response.json()) == {"status", "detail"}
    assert not LabelStudioAnnotation.objects.exists() and not Task.objects.exists()
