"""The export API refuses bad input with the studio's error envelope and writes nothing; the
formats catalogue; roles."""

import pytest

from apps.exports.models import Export
from apps.tasks.models import Task
from tests.clusters.helpers import make_cluster, template
from tests.conftest import client_for
from tests.exports.conftest import create_export, export_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster(world):
    return make_cluster(world.project, world.member)


def _error(world, expect: int, **body) -> dict:
    error = create_export(client_for(world.member), world.project, expect=expect, **body)
    assert not Export.objects.exists() and not Task.objects.exists(), "nothing half-written"
    return error


def test_formats_catalogue(world):
    r = client_for(world.viewer).get("/api/export/formats")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    formats = {f["name"]: f for f in r.json()["data"]}  # the plan's registry: a list
    assert list(formats) == ["onnx", "torchscript", "safetensors", "tensorrt", "openvino"]
    assert [f["available"] for f in formats.values()] == [True, True, True, False, False]
    assert formats["onnx"]["display_name"] == "ONNX"
    onnx = {o["name"]: o for o in formats["onnx"]["options"]}
    assert list(onnx) == ["opset_version", "input_shape", "dynamic_axes", "simplify"]
    assert onnx["opset_version"]["default"] == 17
    assert (onnx["opset_version"]["minimum"], onnx["opset_version"]["maximum"]) == (9, 23)
    assert onnx["dynamic_axes"]["default"] == {
        "input": {"0": "batch_size"},
        "output": {"0": "batch_size"},
    }
    assert onnx["input_shape"]["default"] is None
    assert onnx["simplify"]["default"] is False
    assert onnx["simplify"]["available"] is True
    assert [o["name"] for o in formats["torchscript"]["options"]] == ["input_shape"]
    assert formats["safetensors"]["options"] == []
    assert "rtol 1e-3 / atol 1e-5" in formats["onnx"]["validation"]
    assert client_for(None).get("/api/export/formats").status_code == 401


def test_unknown_format(world, cluster):
    error = _error(world, 422, cluster_id=str(cluster.pk), format="tflite")
    assert error["code"] == "VALIDATION_ERROR"
    assert "format" in error["details"] and "onnx" in error["details"]["format"][0]


@pytest.mark.parametrize("fmt", ["tensorrt", "openvino"])
def test_a_format_of_the_plan_orchard_does_not_produce(world, cluster, fmt):
    error = _error(world, 422, cluster_id=str(cluster.pk), format=fmt)
    assert error["code"] == "EXPORT_FORMAT_UNAVAILABLE"
    assert f"'{fmt}' is not yet available" in error["message"]


@pytest.mark.parametrize(
    ("fmt", "options", "field", "message"),
    [
        ("onnx", {"opset": 17}, "options.opset", "Unknown option"),
        ("safetensors", {"input_shape": [1, 64]}, "options.input_shape", "options: none"),
        ("torchscript", {"simplify": True}, "options.simplify", "Unknown option"),
        ("onnx", {"opset_version": 99}, "options.opset_version", "from 9 to 23"),
        ("onnx", {"opset_version": "17"}, "options.opset_version", "integer"),
        ("onnx", {"simplify": "yes"}, "options.simplify", "true or false"),
        ("onnx", {"input_shape": [1, 3, 224, 224]}, "options.input_shape", "one sample holds 64"),
        ("torchscript", {"input_shape": [64]}, "options.input_shape", "batch first"),
        ("onnx", {"input_shape": [1, 0, 64]}, "options.input_shape", "positive"),
        ("onnx", {"input_shape": "1x64"}, "options.input_shape", "list"),
        ("onnx", {"input_shape": [1, True]}, "options.input_shape", "positive integers"),
        ("onnx", {"input_shape": [100000, 64000]}, "options.input_shape", "at most"),
        ("onnx", {"dynamic_axes": {"x": {"0": "b"}}}, "options.dynamic_axes", "Unknown tensor"),
        ("onnx", {"dynamic_axes": {"input": {"2": "b"}}}, "options.dynamic_axes", "0 to 1"),
        ("onnx", {"dynamic_axes": {"input": {"0": "b c"}}}, "options.dynamic_axes", "label"),
        ("onnx", {"dynamic_axes": {"input": [0, "1"]}}, "options.dynamic_axes", "integers"),
        ("onnx", {"dynamic_axes": ["input"]}, "options.dynamic_axes", "object"),
    ],
)
def test_bad_options(world, cluster, fmt, options, field, message):
    error = _error(world, 422, cluster_id=str(cluster.pk), format=fmt, options=options)
    assert error["code"] == "VALIDATION_ERROR"
    assert list(error["details"]) == [field], error
    assert message in error["details"][field][0], error


def test_a_network_with_two_inputs_exports_only_its_weights(world):
    text = """version: 1
bricks:
    1,1,1
        input: a
        number_of_neurons: 4
    1,2,1
        input: b
        number_of_neurons: 3
    2,1,1
        output: y
        number_of_neurons: 2
"""
    two = make_cluster(world.project, world.member, text=text)
    error = _error(world, 422, cluster_id=str(two.pk), format="onnx")
    assert "one input and one output" in error["details"]["format"][0]
    client = client_for(world.member)
    created = create_export(client, world.project, cluster_id=str(two.pk), format="safetensors")
    assert created["status"] == "pending"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"cluster_id": "C", "checkpoint_id": "P"},
        {"cluster_id": "C", "run_id": "run-1"},
    ],
)
def test_exactly_one_source(world, cluster, body):
    body = {k: (str(cluster.pk) if v == "C" else v) for k, v in body.items()}
    error = _error(world, 422, format="onnx", **body)
    assert "source" in error["details"]


def test_run_fields_without_a_run(world, cluster):
    error = _error(world, 422, cluster_id=str(cluster.pk), checkpoint="best", format="onnx")
    assert "checkpoint" in error["details"]
    error = _error(world, 422, run_id="run-1", checkpoint="middle", format="onnx")
    assert "checkpoint" in error["details"]


def test_unknown_fields_are_refused(world, cluster):
    error = _error(world, 422, cluster_id=str(cluster.pk), format="onnx", project_id="proj-x")
    assert "project_id" in error["details"]


def test_foreign_or_missing_sources_are_not_found(world):
    from apps.clusters.services import checkpoint_save

    theirs = make_cluster(world.other_project, world.outsider)
    their_checkpoint = checkpoint_save(cluster=theirs, actor=world.outsider, name="cp")
    for body in (
        {"cluster_id": str(theirs.pk)},
        {"checkpoint_id": str(their_checkpoint.pk)},
        {"cluster_id": "not-a-uuid"},
        {"checkpoint_id": "00000000-0000-0000-0000-000000000000"},
        {"run_id": "run-000000000000"},
        {"run_id": "run-000000000000", "experiment_id": "exp-000000000000"},
    ):
        error = _error(world, 404, format="onnx", **body)
        assert error["code"] == "NOT_FOUND", body


def test_a_private_cluster_of_another_member_is_not_found(world):
    from apps.clusters.services import cluster_create

    private = cluster_create(
        project=world.project,
        actor=world.owner,
        name="private",
        template_text=template(),
        visibility="private",
    )
    error = _error(world, 404, cluster_id=str(private.pk), format="onnx")
    assert error["code"] == "NOT_FOUND"


def test_roles(world, cluster):
    viewer = client_for(world.viewer)
    r = viewer.post(
        export_url(world.project), {"cluster_id": str(cluster.pk), "format": "onnx"}, format="json"
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    assert client_for(world.outsider).get(export_url(world.project)).status_code == 404
    assert client_for(None).get(export_url(world.project)).status_code == 401
    assert not Export.objects.exists()


def test_create_answers_the_status_and_queues_one_task(world, cluster):
    client = client_for(world.member)
    created = create_export(
        client,
        world.project,
        cluster_id=str(cluster.pk),
        format="onnx",
        options={"dynamic_axes": {"input": [0]}},
        visibility="private",
    )
    assert created["status"] == "pending" and created["progress"] == 0.0
    assert created["options"] == {
        "opset_version": 17,
        "input_shape": [1, 64],
        "dynamic_axes": {"input": {"0": "input_dim0"}},
        "simplify": False,
    }
    assert created["visibility"] == "private" and created["owner"] == "bob"
    task = Task.objects.get(pk=created["task_id"])
    assert (task.kind, task.target_type, task.target_id, task.params) == (
        "export",
        "clusters.cluster",
        cluster.pk,
        {"export_id": created["id"]},
    )
    assert task.visibility == "private"
    # Tasks of kind "export" are made through /api/export only.
    from apps.core.exceptions import ValidationFailed
    from apps.tasks.services import task_create

    with pytest.raises(ValidationFailed, match="/api/export"):
        task_create(project=world.project, actor=world.member, kind="export", name="x")
    # A private export is invisible to other members, even viewers.
    assert client_for(world.viewer).get(export_url(world.project, created["id"])).status_code == 404
    assert client_for(world.owner).get(export_url(world.project, created["id"])).status_code == 200


def test_a_cluster_in_direct_mode_is_a_conflict(world, cluster):
    from apps.clusters.services import cluster_set_mode

    cluster_set_mode(cluster=cluster, mode="DIRECT")
    error = _error(world, 409, cluster_id=str(cluster.pk), format="onnx")
    assert error["code"] == "CONFLICT" and "DIRECT" in error["message"]
