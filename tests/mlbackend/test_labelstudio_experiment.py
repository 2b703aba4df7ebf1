"""Label Studio backends bound to an experiment of the training studio (instead of a model): the
binding in the main API (exactly one of cluster_id / experiment_id, project and visibility
scoped), `/predict` before any completed run (a protocol error) and after (the best checkpoint
of the latest completed run, its version naming the run), and training refused (the studio
trains the experiment)."""

import numpy as np
import pytest

from apps.mlbackend.labelstudio import runtime
from apps.mlbackend.models import LabelStudioAnnotation, LabelStudioBackend
from apps.tasks.models import Task
from apps.training.models import Run
from tests.clusters.helpers import make_cluster, template
from tests.conftest import client_for
from tests.mlbackend.labelstudio_helpers import (
    IMAGE_CONFIG,
    data_uri,
    ls_annotation,
    ls_task,
    no_connection_check,
    predict_body,
    setup_body,
    stripes_png,
    webhook_body,
)
from tests.mlbackend.test_labelstudio_protocol import LabelStudio
from tests.tasks.conftest import stub_broker, stub_worker, wait_for  # noqa: F401 (fixtures)
from tests.training.conftest import make_mnist

DIGITS = [str(d) for d in range(10)]
DIGITS_CONFIG = (
    '<View>\n  <Image name="image" value="$image"/>\n  <Choices name="digit" toName="image">\n'
    + "".join(f'    <Choice value="{d}"/>\n' for d in DIGITS)
    + "  </Choices>\n</View>"
)


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    runtime.clear_cache()
    yield
    runtime.clear_cache()


def _url(project, *parts):
    return "/".join([f"/api/mlbackend/{project.pk}/backends", *parts])


def _experiment(client, project, train, val=None, **config) -> dict:
    body = {
        "name": "digits mlp",
        "dataset_id": str(train.pk),
        "architecture": "mlp",
        "input_size": [64],
        "epochs": 2,
        "batch_size": 64,
        **config,
    }
    if val is not None:
        body["val_dataset_id"] = str(val.pk)
    r = client.post(f"/api/training/{project.pk}/experiments", body, format="json")
    assert r.status_code == 200, r.content
    return r.json()["data"]


def _create(client, project, **body):
    return client.post(_url(project), {"name": "ls", **body}, format="json")


def _digit_task(task_id: int, phase: int = 0) -> dict:
    return ls_task(task_id, {"image": data_uri(stripes_png(bool(task_id % 2), phase=phase))})


# --- binding in the main API (no run needed) -----------------------------------------------------


@pytest.mark.django_db
def test_create_bound_to_an_experiment_before_any_run(world, monkeypatch):
    no_connection_check(monkeypatch)
    data = make_mnist(world.project, world.owner, "digits", 40)
    client = client_for(world.member)
    experiment = _experiment(client, world.project, data)
    r = _create(client, world.project, experiment_id=experiment["id"], label_config=DIGITS_CONFIG)
    assert r.status_code == 201, r.content
    backend = r.json()["data"]
    assert (backend["experiment_id"], backend["cluster_id"], backend["checkpoint_id"]) == (
        experiment["id"],
        None,
        None,
    )
    assert (backend["served_run_id"], backend["model_version"]) == (None, "0.0.0")
    assert backend["interface"]["labels"] == DIGITS
    items = client.get(_url(world.project)).json()["data"]["items"]
    assert [(b["id"], b["model_version"]) for b in items] == [(backend["id"], "0.0.0")]

    # Label Studio connects: health and setup answer (no model is needed for them) ...
    ls = LabelStudio(backend["id"])
    r = ls.get("health")
    assert r.status_code == 200 and r.json()["model_version"] == "0.0.0"
    r = ls.post("setup", setup_body(DIGITS_CONFIG))
    assert r.status_code == 200 and r.json() == {"model_version": "0.0.0"}
    assert ls.get("versions").json() == {"versions": ["0.0.0"]}
    # ... but predictions need a completed run: a JSON error of the protocol that says so.
    r = ls.post("predict", predict_body([_digit_task(1)], DIGITS_CONFIG))
    assert r.status_code == 409 and r["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["status"] == 409 and "no completed run yet" in body["detail"], body
    assert "digits mlp" in body["detail"]


@pytest.mark.django_db
def test_training_is_refused_and_annotations_are_still_stored(world):
    data = make_mnist(world.project, world.owner, "digits", 40)
    client = client_for(world.owner)
    experiment = _experiment(client, world.project, data)
    r = _create(client, world.project, experiment_id=experiment["id"], label_config=DIGITS_CONFIG)
    backend_id = r.json()["data"]["id"]
    ls = LabelStudio(backend_id)
    task = _digit_task(3)
    annotation = ls_annotation(11, 3, "digit", "image", "7")
    r = ls.post("webhook", webhook_body("ANNOTATION_CREATED", DIGITS_CONFIG, annotation, task))
    assert r.status_code == 201 and r.json()["result"]["label"] == "7"
    assert "job" not in r.json()["result"]

    # START_TRAINING, the old /train and the API's train: 409 with the reason, no task.
    r = ls.post("webhook", webhook_body("START_TRAINING", DIGITS_CONFIG))
    assert r.status_code == 409 and "training studio" in r.json()["detail"], r.content
    r = ls.post("train", {"annotations": [{**task, "annotations": [annotation]}], "project": "7"})
    assert r.status_code == 409 and "training studio" in r.json()["detail"], r.content
    r = client.post(_url(world.project, backend_id, "train"))
    assert r.status_code == 409, r.content
    error = r.json()["error"]
    assert error["code"] == "CONFLICT" and "training studio" in error["message"]
    assert not Task.objects.filter(kind="labelstudio_train").exists()
    assert LabelStudioAnnotation.objects.filter(backend_id=backend_id).count() == 1
    r = ls.get("is_training")
    assert r.status_code == 200 and r.json()["is_training"] is False


@pytest.mark.django_db
@pytest.mark.parametrize("given", ["both", "neither"])
def test_exactly_one_of_model_and_experiment(world, given):
    data = make_mnist(world.project, world.owner, "digits", 40)
    client = client_for(world.owner)
    experiment = _experiment(client, world.project, data)
    body = {}
    if given == "both":
        cluster = make_cluster(world.project, world.owner, text=template(inputs=64, outputs=10))
        body = {"cluster_id": str(cluster.pk), "experiment_id": experiment["id"]}
    r = _create(client, world.project, **body)
    assert r.status_code == 422, r.content
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert {"cluster_id", "experiment_id"} <= set(error["details"]), error
    assert ("not both" if given == "both" else "cluster_id") in error["message"]
    assert not LabelStudioBackend.objects.exists()


@pytest.mark.django_db
def test_experiments_of_the_project_and_visible_to_the_caller_only(world):
    foreign_data = make_mnist(world.other_project, world.outsider, "theirs", 40)
    foreign = _experiment(client_for(world.outsider), world.other_project, foreign_data)
    data = make_mnist(world.project, world.owner, "digits", 40)
    private = _experiment(client_for(world.owner), world.project, data, visibility="private")
    shared = _experiment(client_for(world.owner), world.project, data)
    member = client_for(world.member)
    for experiment_id in (foreign["id"], private["id"], "exp-000000000000", "not an id"):
        r = _create(member, world.project, experiment_id=experiment_id)
        assert r.status_code == 422, r.content
        assert r.json()["error"]["details"]["experiment_id"] == ["Not found in this project."]
    # What goes with a model only: a checkpoint, training on every annotation.
    from apps.clusters.services import checkpoint_save

    cluster = make_cluster(world.project, world.member, text=template(inputs=64, outputs=10))
    checkpoint = checkpoint_save(cluster=cluster, actor=world.member, name="cp")
    for extra, field in [
        ({"checkpoint_id": str(checkpoint.pk)}, "checkpoint_id"),
        ({"train_on_annotation": True}, "train_on_annotation"),
    ]:
        r = _create(member, world.project, experiment_id=shared["id"], **extra)
        assert r.status_code == 422 and field in r.json()["error"]["details"], r.content
    # A label config whose choices do not fit is refused once a run gives the model: before,
    # the config is only parsed (an unparsable one is refused).
    r = _create(member, world.project, experiment_id=shared["id"], label_config="<View>")
    assert r.status_code == 422 and "label_config" in r.json()["error"]["details"]
    assert not LabelStudioBackend.objects.exists()
    # A viewer may not create; the member binds the admin's shared experiment (read only).
    r = _create(client_for(world.viewer), world.project, experiment_id=shared["id"])
    assert r.status_code == 403
    r = _create(member, world.project, experiment_id=shared["id"])
    assert r.status_code == 201, r.content
    # The other project does not see the backend.
    outsider = client_for(world.outsider)
    assert outsider.get(_url(world.project, r.json()["data"]["id"])).status_code in (403, 404)
    assert outsider.get(_url(world.other_project, r.json()["data"]["id"])).status_code == 404


@pytest.mark.django_db
def test_patch_moves_the_binding_between_model_and_experiment(world):
    data = make_mnist(world.project, world.owner, "digits", 40)
    client = client_for(world.owner)
    experiment = _experiment(client, world.project, data)
    cluster = make_cluster(world.project, world.owner, text=template(inputs=64, outputs=10))
    r = _create(client, world.project, cluster_id=str(cluster.pk), train_on_annotation=True)
    backend_id = r.json()["data"]["id"]
    # Training on annotations must be turned off with the move (it is trained in the studio).
    r = client.patch(
        _url(world.project, backend_id), {"experiment_id": experiment["id"]}, format="json"
    )
    assert r.status_code == 422 and "train_on_annotation" in r.json()["error"]["details"]
    assert LabelStudioBackend.objects.get(pk=backend_id).cluster_id == cluster.pk
    r = client.patch(
        _url(world.project, backend_id),
        {"experiment_id": experiment["id"], "train_on_annotation": False},
        format="json",
    )
    assert r.status_code == 200, r.content
    data = r.json()["data"]
    assert (data["experiment_id"], data["cluster_id"], data["model_version"]) == (
        experiment["id"],
        None,
        "0.0.0",
    )
    r = client.patch(
        _url(world.project, backend_id),
        {"experiment_id": experiment["id"], "cluster_id": str(cluster.pk)},
        format="json",
    )
    assert r.status_code == 422 and "experiment_id" in r.json()["error"]["details"]
    r = client.patch(
        _url(world.project, backend_id), {"cluster_id": str(cluster.pk)}, format="json"
    )
    assert r.status_code == 200
    data = r.json()["data"]
    assert (data["experiment_id"], data["cluster_id"], data["model_version"]) == (
        None,
        str(cluster.pk),
        "1.0.0",
    )


@pytest.mark.django_db
def test_list_shows_every_version_at_a_constant_query_count(world):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    data = make_mnist(world.project, world.owner, "digits", 40)
    client = client_for(world.owner)
    for _ in range(3):
        experiment = _experiment(client, world.project, data)
        assert _create(client, world.project, experiment_id=experiment["id"]).status_code == 201
        cluster = make_cluster(world.project, world.owner, text=template(inputs=64, outputs=10))
        assert _create(client, world.project, cluster_id=str(cluster.pk)).status_code == 201
    counts = []
    for size in (2, 6):
        with CaptureQueriesContext(connection) as queries:
            r = client.get(_url(world.project) + f"?page_size={size}")
        items = r.json()["data"]["items"]
        assert len(items) == size
        assert {b["model_version"] for b in items} == {"0.0.0", "1.0.0"}
        counts.append(len(queries))
    assert counts[0] == counts[1]


# --- with real runs of the training studio -------------------------------------------------------


def _run(client, project, exp_id) -> str:
    r = client.post(f"/api/training/{project.pk}/experiments/{exp_id}/run", format="json")
    assert r.status_code == 200, r.content  # the plan: an envelope with 200
    run_id = r.json()["data"]["run_id"]

    def ended():
        data = client.get(f"/api/training/{project.pk}/runs/{run_id}").json()["data"]
        return data if data["status"] in ("completed", "failed", "stopped") else None

    assert wait_for(ended)["status"] == "completed"
    return run_id


def _expected(run_id: str, task: dict):
    """(label, score) the run's best checkpoint gives one task's image, computed directly."""
    from apps.clusters.runtime import build_module, read_state
    from apps.clusters.services import checkpoint_path
    from apps.mlbackend.labelstudio.features import decode_image
    from apps.training.selectors import run_checkpoint_get
    from ml.inference import predict_proba

    best = run_checkpoint_get(run=Run.objects.get(pk=run_id), which="best")
    state, meta = read_state(checkpoint_path(str(best.project_id), str(best.pk)))
    model = build_module(source=meta["source"], template=meta["template"], config=meta["config"])
    model.load_state_dict(state)
    import base64

    png = base64.b64decode(task["data"]["image"].split(",", 1)[1])
    x = decode_image(png, channels=1, height=8, width=8)[None] * meta["input_scale"]
    (row,) = predict_proba(model.eval(), x.astype(np.float32))
    return DIGITS[int(row.argmax())], float(row.max())


@pytest.mark.django_db(transaction=True)
def test_predictions_come_from_the_latest_completed_run(world, stub_worker, monkeypatch):  # noqa: F811
    no_connection_check(monkeypatch)
    train = make_mnist(world.project, world.owner, "small-train", 200)
    val = make_mnist(world.project, world.owner, "small-val", 60, test=True)
    client = client_for(world.owner)
    experiment = _experiment(client, world.project, train, val)
    r = _create(client, world.project, experiment_id=experiment["id"], label_config=DIGITS_CONFIG)
    backend_id = r.json()["data"]["id"]
    ls = LabelStudio(backend_id)
    tasks = [_digit_task(1), _digit_task(2, phase=1)]

    first = _run(client, world.project, experiment["id"])
    first_version = f"1.0.0-{first}"
    # What is served is the run's best checkpoint (its last one is not even needed).
    Run.objects.filter(pk=first).update(last_checkpoint=None)
    r = ls.post("setup", setup_body(DIGITS_CONFIG))
    assert r.status_code == 200 and r.json() == {"model_version": first_version}
    r = ls.post("predict", predict_body(tasks, DIGITS_CONFIG))
    assert r.status_code == 200, r.content
    answer = r.json()
    assert answer["model_version"] == first_version
    for task, result in zip(tasks, answer["results"], strict=True):
        label, score = _expected(first, task)
        assert result["model_version"] == first_version
        assert result["result"][0]["value"] == {"choices": [label]}
        assert result["score"] == pytest.approx(score, rel=1e-5)
    data = client.get(_url(world.project, backend_id)).json()["data"]
    assert (data["served_run_id"], data["model_version"]) == (first, first_version)
    # Now that a run gives the model, a label config must fit it (10 outputs, not 2 choices).
    r = client.patch(_url(world.project, backend_id), {"label_config": IMAGE_CONFIG}, format="json")
    assert r.status_code == 422 and "label_config" in r.json()["error"]["details"]
    r = ls.post("predict", predict_body(tasks, IMAGE_CONFIG))
    assert r.status_code == 400 and "10 outputs" in r.json()["detail"], r.content

    # A newer completed run is a new version: Label Studio sees it and gets its predictions.
    client.patch(
        f"/api/training/{world.project.pk}/experiments/{experiment['id']}",
        {"epochs": 3, "learning_rate": 0.02},
        format="json",
    )
    second = _run(client, world.project, experiment["id"])
    second_version = f"2.0.0-{second}"
    assert ls.get("health").json()["model_version"] == second_version
    assert ls.get("versions").json() == {"versions": [first_version, second_version]}
    answer = ls.post("predict", predict_body(tasks, DIGITS_CONFIG)).json()
    assert answer["model_version"] == second_version
    expected = [_expected(second, task) for task in tasks]
    assert [r["score"] for r in answer["results"]] == pytest.approx([e[1] for e in expected])
    # The list shows the same, without a query per backend.
    (item,) = client.get(_url(world.project)).json()["data"]["items"]
    assert (item["served_run_id"], item["model_version"]) == (second, second_version)
    # The older run can still be asked for by its version.
    answer = ls.post(
        "predict", {**predict_body(tasks, DIGITS_CONFIG), "model_version": first_version}
    ).json()
    assert answer["model_version"] == first_version
    assert answer["results"][0]["score"] == pytest.approx(_expected(first, tasks[0])[1], rel=1e-5)
