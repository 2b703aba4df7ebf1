"""The gateway's 400/401/404 answers word for word: the SDK shows `error` to its users, so these
bytes are the protocol's. With several faults the first in the SDK's field order answers, and an
unknown id answers 404 before a later field is looked at, as the gateway always answered."""

import uuid

import pytest

from tests.factories import PASSWORD
from tests.hanami.conftest import SDK, token_for

pytestmark = pytest.mark.django_db

GHOST = str(uuid.uuid4())


def _answer(response):
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("method", "path", "payload", "expected"),
    [
        ("post", "token", ["alice"], (400, "The body must be a JSON object.")),
        ("post", "token", {"password": "x"}, (400, "id: is required.")),
        ("post", "token", {"id": "alice", "password": 5}, (400, "password: must be a str.")),
        ("put", "token", {"project_id": ""}, (400, "project_id: is required.")),
        ("post", "user", {"name": "x", "password": PASSWORD}, (400, "id: is required.")),
        (
            "post",
            "user",
            {"id": "1x", "name": "x", "password": PASSWORD},
            (400, "id: must match [a-zA-Z][a-zA-Z_0-9]*."),
        ),
        (
            "post",
            "user",
            {"id": "a" * 151, "name": "x", "password": PASSWORD},
            (400, "id: must be at most 150 characters."),
        ),
        (
            "post",
            "user",
            {"id": "x", "name": "x", "password": PASSWORD, "is_admin": None},
            (400, "is_admin: must be true or false."),
        ),
        ("get", "user", {}, (400, "id: is required.")),
        ("get", "user", {"id": "ghost"}, (404, "User not found.")),
        (
            "post",
            "user/project",
            {"id": "bob", "project_id": "p", "role": 3},
            (400, "role: must be a string."),
        ),
        ("delete", "user/project", {"id": "bob"}, (400, "project_id: is required.")),
        (
            "post",
            "project",
            {"id": "p" * 65, "name": "x"},
            (400, "id: must be at most 64 characters."),
        ),
        ("post", "csv/dataset", {"name": "x"}, (400, "input_data_size: is required.")),
        (
            "post",
            "csv/dataset",
            {"name": "x", "input_data_size": True},
            (400, "input_data_size: must be an integer."),
        ),
        (
            "post",
            "mnist/dataset",
            {"name": "x", "input_data_size": 3, "label_data_size": -1},
            (400, "label_data_size: must be positive."),
        ),
        ("put", "csv/dataset", {"uuid": 7}, (400, "uuid: is required.")),
        ("put", "csv/dataset", {"uuid": "x"}, (400, "uuid: must be a UUID.")),
        ("put", "csv/dataset", {"uuid": GHOST}, (404, "Dataset not found.")),
        (
            "put",
            "csv/dataset",
            {"uuid": GHOST, "uuid_input_file": GHOST},
            (404, "Dataset not found."),
        ),
        ("get", "dataset", {"uuid": ""}, (400, "uuid: is required.")),
        ("get", "dataset/progress", {"uuid": "x"}, (400, "uuid: must be a UUID.")),
        ("post", "cluster", {"name": "c"}, (400, "template: is required.")),
        (
            "post",
            "cluster",
            {"name": "c", "template": "%%%"},
            (400, "template: must be the base64 of the template text."),
        ),
        (
            "put",
            "cluster/set_mode",
            {"new_state": "FAST", "uuid": GHOST},
            (400, "new_state: must be DIRECT or TASK."),
        ),
        ("put", "cluster/set_mode", {"new_state": "TASK"}, (400, "uuid: is required.")),
        ("put", "cluster/switch_host", {"cluster_uuid": GHOST}, (404, "Cluster not found.")),
        (
            "post",
            "task",
            {"name": "t", "type": "eval", "cluster_uuid": GHOST, "dataset_uuid": GHOST},
            (400, "type: must be train or request."),
        ),
        (
            "post",
            "task",
            {"name": "t", "type": "train", "cluster_uuid": GHOST, "dataset_uuid": GHOST},
            (404, "Cluster not found."),
        ),
        (
            "get",
            "task",
            {"uuid": GHOST, "cluster_uuid": "x"},
            (400, "cluster_uuid: must be a UUID."),
        ),
        ("get", "task/all", {}, (400, "cluster_uuid: is required.")),
        ("get", "dataset/check", {"dataset_uuid": GHOST}, (400, "result_uuid: is required.")),
        ("post", "dataset/check", {"result_uuid": GHOST}, (404, "Request result not found.")),
        # The main API's length limits on the same columns (a longer name was stored whole on
        # SQLite, and is a database error on PostgreSQL); a name of spaces is no name.
        (
            "post",
            "user",
            {"id": "x", "name": "n" * 151, "password": PASSWORD},
            (400, "name: must be at most 150 characters."),
        ),
        (
            "post",
            "user",
            {"id": "x", "name": "n", "password": "p" * 129},
            (400, "password: must be at most 128 characters."),
        ),
        (
            "post",
            "user",
            {"id": "x", "name": "  ", "password": PASSWORD},
            (400, "name: is required."),
        ),
        (
            "post",
            "project",
            {"id": "p", "name": "n" * 201},
            (400, "name: must be at most 200 characters."),
        ),
        (
            "post",
            "cluster",
            {"name": "c" * 201, "template": "%%%"},
            (400, "name: must be at most 200 characters."),
        ),
        (
            "post",
            "cluster/save",
            {"name": "c" * 201, "cluster_uuid": GHOST},
            (400, "name: must be at most 200 characters."),
        ),
        (
            "post",
            "task",
            {"name": "t" * 201, "type": "train", "cluster_uuid": GHOST, "dataset_uuid": GHOST},
            (400, "name: must be at most 200 characters."),
        ),
        (
            "post",
            "mnist/dataset",
            {"name": "d" * 201, "input_data_size": 3, "label_data_size": 3},
            (400, "name: must be at most 200 characters."),
        ),
        # The SDK's switch_project (POST user/project) checks its body as PUT token does.
        ("post", "user/project", {"project_id": 5}, (400, "project_id: must be a str.")),
        ("get", "audit_log", {"page": "x"}, (400, "page: must be an integer.")),
        ("get", "audit_log", {"page": "-1"}, (400, "page: must be 0 or more.")),
        (
            "get",
            "audit_log",
            {"user_id": "a-b"},
            (400, "user_id: must match [a-zA-Z][a-zA-Z_0-9]*."),
        ),
    ],
)
def test_error_answers(world, method, path, payload, expected):
    sdk = SDK(token_for("root", PASSWORD))
    call = getattr(sdk, method)
    response = call(path, payload) if method in ("post", "put") else call(path, **payload)
    status, message = expected
    assert _answer(response) == (status, {"error": message})


def test_policy_denials_answer_before_bad_input(world):
    bob = SDK(token_for("bob", PASSWORD))
    denied = (401, {"error": "Only admins may do this."})
    assert _answer(bob.get("audit_log", user_id="alice", page="x")) == denied
    assert _answer(bob.post("user/project", {"id": "1x"})) == denied
    assert _answer(bob.post("user", {})) == denied


def test_checks_answer_in_upstreams_order(world):
    admin = SDK(token_for("root", PASSWORD))
    csv = admin.post("csv/dataset", {"name": "t", "input_data_size": 4}).json()
    wrong_kind = {"uuid": csv["uuid"], "uuid_input_file": "x", "uuid_label_file": "x"}
    assert _answer(admin.put("mnist/dataset", wrong_kind)) == (
        400,
        {"error": "uuid: is not a mnist dataset."},
    )
    not_its_upload = {"uuid": csv["uuid"], "uuid_input_file": GHOST}
    assert _answer(admin.put("csv/dataset", not_its_upload)) == (
        404,
        {"error": "uuid_input_file: upload not found for this dataset."},
    )
    membership = {"id": "ghost", "project_id": "p", "is_project_admin": "yes"}
    assert _answer(admin.post("user/project", membership)) == (404, {"error": "User not found."})


def test_two_creations_of_one_project_id_at_once_are_a_409_not_a_500(world, monkeypatch):
    """The id was checked free, then inserted: a concurrent creation of the same id in between
    (ten SDK clients at once, on PostgreSQL) broke the primary key and answered 500."""
    from apps.accounts import services
    from apps.accounts.models import Project

    quota = services._require_project_quota

    def another_client_first(actor):
        quota(actor)
        Project.objects.create(pk="raced", name="theirs", created_by=actor)

    monkeypatch.setattr(services, "_require_project_quota", another_client_first)
    sdk = SDK(token_for("root", PASSWORD))
    assert _answer(sdk.post("project", {"id": "raced", "name": "mine"})) == (
        409,
        {"error": "Project 'raced' already exists."},
    )
    # (The other client's row went with this test's transaction: it is one transaction here.)
    assert not Project.objects.filter(pk="raced", name="mine").exists()
