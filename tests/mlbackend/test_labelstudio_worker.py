"""START_TRAINING through the real job engine: the task is enqueued on commit, a Dramatiq worker
(stub broker) runs the `labelstudio_train` kind, and Label Studio sees the new version."""

import pytest

from tests.mlbackend.labelstudio_helpers import (
    TEXT_CONFIG,
    ls_annotation,
    ls_task,
    make_backend,
    predict_body,
    webhook_body,
)
from tests.mlbackend.test_labelstudio_protocol import LabelStudio
from tests.tasks.conftest import stub_broker, stub_worker, wait_for, wait_state  # noqa: F401


@pytest.mark.django_db(transaction=True)
def test_start_training_runs_on_a_worker(world, stub_worker):  # noqa: F811
    backend = make_backend(
        world.project, world.owner, config=TEXT_CONFIG, train_params={"epochs": 5}
    )
    ls = LabelStudio(backend.pk)
    for i, (text, label) in enumerate([("good", "Positive"), ("bad", "Negative")], start=1):
        annotation = ls_annotation(i, i, "sentiment", "text", label)
        body = webhook_body(
            "ANNOTATION_CREATED", TEXT_CONFIG, annotation, ls_task(i, {"text": text})
        )
        assert ls.post("webhook", body).status_code == 201
    r = ls.post("webhook", webhook_body("START_TRAINING", TEXT_CONFIG))
    assert r.status_code == 201
    done = wait_state(r.json()["result"]["job"], timeout=60)
    assert done.state == "finished", (done.error, done.traceback)
    wait_for(lambda: ls.get("is_training").json()["is_training"] is False)
    assert ls.get("versions").json() == {"versions": ["1.1.0"]}
    answer = ls.post("predict", predict_body([ls_task(9, {"text": "good"})], TEXT_CONFIG)).json()
    assert answer["model_version"] == "1.1.0" and len(answer["results"]) == 1
