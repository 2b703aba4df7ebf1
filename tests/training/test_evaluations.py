"""Evaluations through the API: create and start on a run's checkpoint, status and results
(accuracy, per-class metrics, confusion matrix), per-item results paginated, sorted and filtered,
validation of the request, delete."""

import numpy as np
import pytest

from apps.tasks.models import Task
from apps.training.models import Evaluation
from apps.training.services import evaluation_dir
from tests.conftest import client_for
from tests.training.conftest import create_experiment, run_url, start_run, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _eval_url(project, *parts):
    return "/".join([f"/api/evaluation/{project.pk}", *parts])


def _finished_run(client, project, **config):
    exp = create_experiment(client, project, **config)
    run = start_run(client, project, exp["id"])
    done = wait_for(
        lambda: (
            (d := client.get(run_url(project, run["run_id"])).json()["data"])["status"]
            in ("completed", "failed")
            and d
        ),
        60,
    )
    assert done["status"] == "completed", done["error"]
    return exp, done


def _evaluate(client, project, **body):
    r = client.post(_eval_url(project), body, format="json")
    assert r.status_code == 200, r.content
    created = r.json()["data"]
    assert created["eval_id"].startswith("eval-") and created["status"] == "pending"
    return wait_for(
        lambda: (
            (d := client.get(_eval_url(project, created["id"])).json()["data"])["status"]
            in ("completed", "failed")
            and d
        ),
        60,
    )


def _items(client, project, eval_id, **params):
    r = client.get(_eval_url(project, eval_id, "results"), params)
    assert r.status_code == 200, r.content
    return r.json()["data"]


def test_evaluation_on_a_test_dataset(world, small_digits, stub_worker):
    train, test = small_digits
    client = client_for(world.owner)
    exp, run = _finished_run(
        client,
        world.project,
        dataset_id=str(train.pk),
        architecture="mlp",
        input_size=[64],
        epochs=3,
    )
    result = _evaluate(
        client,
        world.project,
        experiment_id=exp["id"],
        run_id=run["id"],
        checkpoint="last",
        dataset_id=str(test.pk),
        batch_size=16,
    )
    assert result["status"] == "completed", result["error"]
    assert result["num_samples"] == 100 and result["split_subset"] == "all"
    assert result["checkpoint"] == "last" and result["checkpoint_id"] == run["last_checkpoint_id"]
    report = result["results"]
    assert report["checkpoint_epoch"] == 3 and len(report["per_class"]) == 10
    matrix = np.asarray(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 100
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / 100)
    assert result["accuracy"] == report["accuracy"] > 0.5
    assert list(report["per_class"]) == [str(i) for i in range(10)]  # the plan: keyed by class
    for row in report["per_class"].values():
        assert set(row) == {"precision", "recall", "f1", "support"}
    assert report["f1_macro"] == report["macro_avg"]["f1"]

    # Per-item results: paginated, in filename order by default.
    page = _items(client, world.project, result["id"], page_size=7)
    assert (page["total"], page["pages"], len(page["items"])) == (100, 15, 7)
    first = page["items"][0]
    assert first["filename"] == "00" and first["index"] == 0  # zero-padded row numbers
    assert set(first) == {
        "ground_truth",
        "prediction",
        "probabilities",
        "index",
        "path",
        "filename",
        "true_class",
        "true_label",
        "predicted_class",
        "predicted_label",
        "confidence",
        "error",
        "correct",
    }
    every = _items(client, world.project, result["id"], page_size=200)["items"]
    assert [i["filename"] for i in every] == sorted(i["filename"] for i in every)
    assert sum(i["correct"] for i in every) == round(report["accuracy"] * 100)
    assert page["items"] == every[:7]
    last_page = _items(client, world.project, result["id"], page_size=7, page=15)["items"]
    assert last_page == every[98:]

    by_conf = _items(
        client, world.project, result["id"], sort_by="confidence", sort_order="desc", page_size=200
    )["items"]
    confidences = [i["confidence"] for i in by_conf]
    assert confidences == sorted(confidences, reverse=True)
    by_error = _items(client, world.project, result["id"], sort_by="error", page_size=200)["items"]
    assert [i["error"] for i in by_error] == sorted(i["error"] for i in by_error)

    wrong = _items(client, world.project, result["id"], filter_correct="false", page_size=200)
    assert wrong["total"] == 100 - sum(i["correct"] for i in every)
    assert not any(i["correct"] for i in wrong["items"])
    right = _items(client, world.project, result["id"], filter_correct="true")
    assert right["total"] + wrong["total"] == 100
    threes = _items(client, world.project, result["id"], filter_class="3", page_size=200)
    assert threes["total"] == matrix[3].sum()
    assert {i["true_label"] for i in threes["items"]} == {"3"}
    both = _items(client, world.project, result["id"], filter_class="3", filter_correct="true")
    assert both["total"] == matrix[3, 3]

    for params, field in (
        ({"sort_by": "size"}, "sort_by"),
        ({"sort_order": "up"}, "sort_order"),
        ({"filter_correct": "maybe"}, "filter_correct"),
        ({"filter_class": "11"}, "filter_class"),
        ({"page": 0}, "page"),
    ):
        r = client.get(_eval_url(world.project, result["id"], "results"), params)
        assert r.status_code == 422 and field in r.json()["error"]["details"], (params, r.content)

    listed = client.get(_eval_url(world.project)).json()["data"]
    assert [e["id"] for e in listed["items"]] == [result["id"]]

    # Delete: the row, its task and its arrays go.
    evaluation = Evaluation.objects.get(pk=result["id"])
    directory, task_id = evaluation_dir(evaluation), evaluation.task_id
    assert (directory / "probs.npy").exists()
    assert client.delete(_eval_url(world.project, result["id"])).status_code == 200
    assert not Evaluation.objects.exists() and not Task.objects.filter(pk=task_id).exists()
    assert not directory.exists()
    assert client.get(_eval_url(world.project, result["id"])).status_code == 404


def test_evaluation_of_an_image_split_and_request_validation(world, image_set, stub_worker):
    client = client_for(world.owner)
    exp, run = _finished_run(
        client,
        world.project,
        split_index=0,
        architecture="cnn_small",
        epochs=2,
        batch_size=8,
        augmentation={"shift": 0.1, "hflip": True, "noise": 0.01},
    )
    assert list(run["best_metric"]) == ["val_accuracy"]
    assert run["config"]["augmentation"] == {"shift": 0.1, "hflip": True, "noise": 0.01}
    assert run["config"]["split_name"] == "60-20-20" and run["config"]["input_size"] == [1, 8, 8]
    result = _evaluate(client, world.project, experiment_id=exp["id"], run_id=run["id"])
    assert result["status"] == "completed", result["error"]
    # Default: the run's split, subset test.
    stats = client.get(f"/api/splits/{world.project.pk}/0").json()["data"]["stats"]
    assert (result["split_index"], result["split_subset"]) == (0, "test")
    assert result["num_samples"] == stats["test"] > 0
    assert result["progress"] == {"processed": stats["test"], "total": stats["test"]}  # plan
    items = _items(client, world.project, result["id"])["items"]
    names = [i["path"] for i in items]  # sorted by the class folder and name
    assert names == sorted(names) and all("/" in n for n in names)
    # The plan's names lose the class folder unless it is needed: here every class folder holds
    # the same names.
    assert [i["filename"] for i in items] == names
    assert {i["true_label"] for i in items} == {"bars", "dots", "ring"}
    desc = _items(client, world.project, result["id"], sort_order="desc")["items"]
    assert [i["path"] for i in desc] == names[::-1]
    on_all = _evaluate(
        client, world.project, experiment_id=exp["id"], run_id=run["id"], split_subset="all"
    )
    assert on_all["num_samples"] == 24

    def refused(body, field):
        full = {"experiment_id": exp["id"], "run_id": run["id"], **body}
        r = client.post(_eval_url(world.project), full, format="json")
        assert r.status_code == 422, r.content
        assert field in r.json()["error"]["details"], r.content

    refused({"checkpoint": "middle"}, "checkpoint")
    r = client.post(
        _eval_url(world.project),
        {"experiment_id": exp["id"], "run_id": run["id"], "split_index": 4},
        format="json",
    )
    assert (r.status_code, r.json()["error"]["code"]) == (404, "SPLIT_NOT_FOUND"), r.content
    refused({"split_subset": "holdout"}, "split_subset")
    refused({"batch_size": 0}, "batch_size")
    for body, code in (
        ({"experiment_id": "exp-000000000000"}, "EXPERIMENT_NOT_FOUND"),
        ({"run_id": "run-000000000000"}, "RUN_NOT_FOUND"),
    ):
        full = {"experiment_id": exp["id"], "run_id": run["id"], **body}
        r = client.post(_eval_url(world.project), full, format="json")
        assert (r.status_code, r.json()["error"]["code"]) == (404, code), r.content
    refused({"bogus": 1}, "bogus")
    from tests.training.conftest import make_mnist

    digits = make_mnist(world.project, world.owner, "other-classes", 30)
    refused({"dataset_id": str(digits.pk)}, "dataset_id")
    assert Evaluation.objects.count() == 2


def test_a_run_without_checkpoints_and_results_before_the_end(world, small_digits, stub_broker):
    train, test = small_digits
    client = client_for(world.owner)
    exp = create_experiment(
        client, world.project, dataset_id=str(train.pk), architecture="mlp", input_size=[64]
    )
    run = start_run(client, world.project, exp["id"])
    r = client.post(
        _eval_url(world.project),
        {"experiment_id": exp["id"], "run_id": run["run_id"]},
        format="json",
    )
    assert r.status_code == 404  # the plan's CHECKPOINT_NOT_FOUND
    assert r.json()["error"] == {
        "code": "CHECKPOINT_NOT_FOUND",
        "message": "The run has no 'best' checkpoint yet.",
    }
    viewer = client_for(world.viewer)
    r = viewer.post(
        _eval_url(world.project),
        {"experiment_id": exp["id"], "run_id": run["run_id"]},
        format="json",
    )
    assert r.status_code == 403
