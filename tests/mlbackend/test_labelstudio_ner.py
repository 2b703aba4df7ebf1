"""Named entities: `<Labels>` over `<Text>` (Label Studio's NER template), trained from the span
annotations Label Studio's webhooks carry and predicted as `labels` regions with character
offsets, as Label Studio 1.23 stores them."""

import pytest

from apps.mlbackend.labelstudio import runtime
from apps.mlbackend.labelstudio.connect import clear_check_cache
from apps.mlbackend.labelstudio.services import backend_create
from apps.tasks.models import Task
from apps.tasks.runner import task_run
from ml.ner import spans_from_tokens, token_classes, tokenize
from tests.clusters.helpers import make_cluster, template
from tests.mlbackend.labelstudio_helpers import (
    LabelStudioClient,
    ls_task,
    predict_body,
    webhook_body,
)

pytestmark = pytest.mark.django_db

NER_CONFIG = """<View>
  <Labels name="label" toName="text">
    <Label value="PER" background="red"/>
    <Label value="LOC" background="orange"/>
  </Labels>
  <Text name="text" value="$text"/>
</View>"""

TRAIN = [
    ("Alice lives in Paris.", [("Alice", "PER"), ("Paris", "LOC")]),
    ("Bob moved to Berlin last year.", [("Bob", "PER"), ("Berlin", "LOC")]),
    ("In Madrid, Carol met Dave.", [("Madrid", "LOC"), ("Carol", "PER"), ("Dave", "PER")]),
    ("Erin flew from Rome to Oslo.", [("Erin", "PER"), ("Rome", "LOC"), ("Oslo", "LOC")]),
    ("Paris welcomed Bob again.", [("Paris", "LOC"), ("Bob", "PER")]),
    ("Dave and Alice visited Lisbon.", [("Dave", "PER"), ("Alice", "PER"), ("Lisbon", "LOC")]),
    ("Carol works in Oslo now.", [("Carol", "PER"), ("Oslo", "LOC")]),
    ("Erin stayed in Berlin.", [("Erin", "PER"), ("Berlin", "LOC")]),
]


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.TASK_HEARTBEAT_INTERVAL_S = 3600  # task_run() inside the test's transaction
    runtime.clear_cache()
    clear_check_cache()
    yield
    runtime.clear_cache()


def _region(text: str, word: str, label: str, n: int) -> dict:
    start = text.index(word)
    return {
        "value": {"start": start, "end": start + len(word), "text": word, "labels": [label]},
        "id": f"r{n}",
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "origin": "manual",
    }


def _annotation(i: int, text: str, entities) -> dict:
    from tests.mlbackend.labelstudio_helpers import ls_annotation

    annotation = ls_annotation(i, i, "label", "text", "unused")
    annotation["result"] = [_region(text, w, label, k) for k, (w, label) in enumerate(entities)]
    return annotation


def test_tokens_spans_and_classes():
    text = "Dr. Alice  Smith-Jones visited New York."
    tokens = tokenize(text)
    assert [t.text for t in tokens][:4] == ["Dr", ".", "Alice", "Smith"]
    assert all(text[t.start : t.end] == t.text for t in tokens)
    spans = [(4, 22, "PER"), (31, 39, "LOC")]
    classes = token_classes(tokens, spans, ["PER", "LOC"])
    outside = 2
    assert [tokens[i].text for i, c in enumerate(classes) if c == 0] == [
        "Alice",
        "Smith",
        "-",
        "Jones",
    ]
    import numpy as np

    probabilities = np.eye(3)[classes]
    found = spans_from_tokens(text, tokens, probabilities, ["PER", "LOC"])
    assert [(s["text"], s["label"]) for s in found] == [
        ("Alice  Smith-Jones", "PER"),
        ("New York", "LOC"),
    ]
    assert classes[0] == outside


def test_named_entities_trained_from_annotations_and_predicted_as_spans(world):
    cluster = make_cluster(
        world.project, world.owner, text=template(inputs=256, hidden=64, outputs=3)
    )
    backend = backend_create(
        project=world.project,
        actor=world.owner,
        name="ner",
        cluster=cluster,
        label_config=NER_CONFIG,
        train_params={"epochs": 80, "learning_rate": 0.01, "batch_size": 16},
    )
    assert backend.interface["kind"] == "ner"
    ls = LabelStudioClient(backend.pk)
    before = ls.post("predict", predict_body([ls_task(1, {"text": "Bob"})], NER_CONFIG))
    assert before.status_code == 200 and before.json()["results"][0]["model_version"] == "1.0.0"

    for i, (text, entities) in enumerate(TRAIN, start=1):
        body = webhook_body(
            "ANNOTATION_CREATED",
            NER_CONFIG,
            _annotation(i, text, entities),
            ls_task(i, {"text": text}),
        )
        r = ls.post("webhook", body)
        assert r.status_code == 201 and r.json()["result"]["label"] == entities[0][1]
    r = ls.post("webhook", webhook_body("START_TRAINING", NER_CONFIG))
    assert r.status_code == 201, r.content
    task_run(r.json()["result"]["job"])
    task = Task.objects.get(pk=r.json()["result"]["job"])
    assert task.state == "finished", (task.error, task.traceback)
    assert task.result["model_version"] == "1.1.0"

    texts = ["Carol moved to Lisbon.", "Bob lives in Rome."]
    tasks = [ls_task(100 + i, {"text": t}) for i, t in enumerate(texts)]
    r = ls.post("predict", predict_body(tasks, NER_CONFIG))
    assert r.status_code == 200, r.content
    found = []
    for item, text in zip(r.json()["results"], texts, strict=True):
        assert item["model_version"] == "1.1.0"
        for region in item["result"]:
            assert set(region) == {"from_name", "to_name", "type", "value", "score"}
            assert (region["from_name"], region["to_name"], region["type"]) == (
                "label",
                "text",
                "labels",
            )
            value = region["value"]
            assert text[value["start"] : value["end"]] == value["text"]
            found.append((value["text"], value["labels"][0]))
    assert found == [("Carol", "PER"), ("Lisbon", "LOC"), ("Bob", "PER"), ("Rome", "LOC")]


def test_a_model_without_the_outside_output_is_refused(world):
    from apps.core.exceptions import ValidationFailed

    cluster = make_cluster(
        world.project, world.owner, text=template(inputs=64, hidden=16, outputs=2)
    )
    with pytest.raises(ValidationFailed, match="needs 3 outputs"):
        backend_create(
            project=world.project,
            actor=world.owner,
            name="ner",
            cluster=cluster,
            label_config=NER_CONFIG,
        )
