"""Conformance of the REST gateway with the requests and answers of the Hanami SDK."""

import io
import json
import uuid

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from apps.accounts.models import Membership, Project, User
from apps.datasets import imports as dataset_imports
from apps.datasets import uploads as dataset_uploads
from apps.datasets.models import Dataset, UploadSession
from apps.datasets.storage import final_dir
from tests.datasets.conftest import idx_bytes, mnist_arrays
from tests.factories import PASSWORD
from tests.hanami.conftest import SDK, token_for

pytestmark = pytest.mark.django_db


# -- transport ----------------------------------------------------------------------------------


def test_token_request_and_answer_shape(world):
    response = SDK().post("token", {"id": "alice", "password": PASSWORD})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"id", "name", "is_admin", "token"}
    assert body["id"] == "alice" and body["is_admin"] is False
    # The raw token (no "Bearer") works on the other routes.
    assert SDK(body["token"]).get("dataset/all").status_code == 200


def test_bad_login_malformed_body_and_missing_token(world):
    assert SDK().post("token", {"id": "alice", "password": "nope"}).status_code == 401
    response = SDK().client.generic("POST", "/control/v1/token", "{not json", content_type="")
    assert response.status_code == 400 and "error" in response.json()
    assert SDK().post("token", {"id": "alice"}).status_code == 400
    assert SDK().post("token", ["alice"]).status_code == 400
    for path in ("dataset/all", "user/all", "project/all", "user/project"):
        response = SDK().get(path)
        assert response.status_code == 401, path
        assert set(response.json()) == {"error"}
    assert SDK("garbage").get("dataset/all").status_code == 401


def test_only_sdk_status_codes(world):
    token = token_for("alice", PASSWORD)
    # An unknown method on a known endpoint: 404 (like upstream), never 405.
    assert SDK(token).put("dataset/all", {}).status_code == 404
    # A JSON body with an explicit Content-Type works too.
    response = SDK(token).client.post(
        "/control/v1/csv/dataset",
        json.dumps({"name": "x", "input_data_size": 3}),
        content_type="text/plain",
        HTTP_X_AUTH_TOKEN=token,
    )
    assert response.status_code == 200


def test_token_renewal_for_another_project(world):
    other = Project.objects.create(id="second", name="Second")
    Membership.objects.create(user=world.member, project=other, role="member")
    sdk = SDK(token_for("bob", PASSWORD))
    response = sdk.put("token", {"project_id": "second"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "name", "is_admin", "token"}
    # The new token is scoped to "second": a dataset created with it lands there.
    created = SDK(body["token"]).post("csv/dataset", {"name": "in-second", "input_data_size": 4})
    assert Dataset.objects.get(pk=created.json()["uuid"]).project_id == "second"
    # The SDK's switch_project posts user/project {project_id}: same answer.
    switched = sdk.post("user/project", {"project_id": "second"})
    assert switched.status_code == 200 and set(switched.json()) == {
        "id",
        "name",
        "is_admin",
        "token",
    }
    # A project the user is not in: 404, also when posted to user/project.
    assert sdk.put("token", {"project_id": world.other_project.pk}).status_code == 404
    assert sdk.post("user/project", {"project_id": world.other_project.pk}).status_code == 404
    assert SDK().put("token", {"project_id": "second"}).status_code == 401


# -- users and projects -------------------------------------------------------------------------


def test_user_routes(world):
    admin = SDK(token_for("root", PASSWORD))
    response = admin.post(
        "user", {"id": "new_user", "name": "New User", "password": PASSWORD, "is_admin": True}
    )
    assert response.status_code == 200
    assert response.json() == {
        "id": "new_user",
        "name": "New User",
        "creator_id": "",
        "is_admin": True,
        "projects": [],
    }
    assert User.objects.get(username="new_user").is_superuser
    assert (
        admin.post("user", {"id": "new_user", "name": "x", "password": PASSWORD}).status_code == 409
    )
    for bad in ("1abc", "a-b", "a b", "", "ä"):
        assert (
            admin.post("user", {"id": bad, "name": "x", "password": PASSWORD}).status_code == 400
        ), bad
    assert admin.post("user", {"id": "weak", "name": "x", "password": "1"}).status_code == 400

    got = admin.get("user", id="new_user")
    assert got.status_code == 200 and got.json()["id"] == "new_user"
    assert admin.get("user", id="ghost").status_code == 404
    assert admin.get("user", id="bad-id").status_code == 400
    assert admin.get("user").status_code == 400

    listing = admin.get("user/all").json()
    assert listing["header"] == ["id", "name", "creator_id", "projects", "is_admin"]
    ids = [row[0] for row in listing["body"]]
    assert "new_user" in ids and "alice" in ids
    alice = next(row for row in listing["body"] if row[0] == "alice")
    assert alice[3] == [{"project_id": world.project.pk, "role": "admin", "is_project_admin": True}]

    assert admin.delete("user", id="root").status_code == 409  # not yourself
    assert admin.delete("user", id="new_user").status_code == 200
    assert not User.objects.filter(username="new_user").exists()
    assert admin.delete("user", id="new_user").status_code == 404

    # Non-admins: 401 on every user route, nothing changes.
    member = SDK(token_for("bob", PASSWORD))
    assert member.post("user", {"id": "x", "name": "x", "password": PASSWORD}).status_code == 401
    assert member.get("user", id="alice").status_code == 401
    assert member.get("user/all").status_code == 401
    assert member.delete("user", id="alice").status_code == 401
    assert User.objects.filter(username="alice").exists()


def test_project_routes(world):
    admin = SDK(token_for("root", PASSWORD))
    response = admin.post("project", {"id": "test_project", "name": "Test Project"})
    assert response.status_code == 200
    assert response.json() == {"id": "test_project", "name": "Test Project", "creator_id": "root"}
    assert admin.post("project", {"id": "test_project", "name": "again"}).status_code == 409
    assert admin.post("project", {"id": "9lives", "name": "x"}).status_code == 400
    assert admin.post("project", {"id": "ok"}).status_code == 400
    assert admin.get("project", id="test_project").json() == response.json()
    assert admin.get("project", id="nothere").status_code == 404
    listing = admin.get("project/all").json()
    assert listing["header"] == ["id", "name", "creator_id"]
    assert ["test_project", "Test Project", "root"] in listing["body"]
    assert admin.delete("project", id="test_project").status_code == 200
    assert not Project.objects.filter(pk="test_project").exists()

    owner = SDK(token_for("alice", PASSWORD))  # project admin, not global admin
    assert owner.post("project", {"id": "mine", "name": "x"}).status_code == 401
    assert owner.get("project/all").status_code == 401
    assert owner.delete("project", id=world.project.pk).status_code == 401
    assert Project.objects.filter(pk=world.project.pk).exists()


def test_user_project_routes(world):
    admin = SDK(token_for("root", PASSWORD))
    admin.post("project", {"id": "test_project", "name": "Test Project"})
    body = {"id": "carol", "project_id": "test_project", "role": "member", "is_project_admin": True}
    response = admin.post("user/project", body)
    assert response.status_code == 200
    assert {
        "project_id": "test_project",
        "role": "member",
        "is_project_admin": True,
    } in response.json()["projects"]
    assert admin.post("user/project", {**body, "role": "boss"}).status_code == 400
    assert admin.post("user/project", {**body, "id": "ghost"}).status_code == 404
    assert admin.post("user/project", {**body, "project_id": "ghost"}).status_code == 404

    carol = SDK(token_for("carol", PASSWORD))
    listing = carol.get("user/project").json()
    assert listing["header"] == ["project_id", "role", "is_project_admin"]
    assert sorted(row[0] for row in listing["body"]) == sorted([world.project.pk, "test_project"])
    # Only admins add or remove memberships.
    assert carol.post("user/project", {**body, "id": "bob"}).status_code == 401
    assert carol.delete("user/project", project_id="test_project", id="carol").status_code == 401

    assert admin.delete("user/project", project_id="test_project", id="carol").status_code == 200
    assert not Membership.objects.filter(user__username="carol", project_id="test_project").exists()
    assert admin.delete("user/project", project_id="test_project", id="carol").status_code == 404


# -- datasets -----------------------------------------------------------------------------------


def _upload_all(session_id: str, payload: bytes):
    session = UploadSession.objects.get(pk=session_id)
    dataset_uploads.upload_session_write(session=session, position=0, data=payload)


def test_mnist_dataset_lifecycle_over_rest(world):
    sdk = SDK(token_for("bob", PASSWORD))
    images, labels = mnist_arrays(n=6)
    images_raw, labels_raw = idx_bytes(images), idx_bytes(labels)
    response = sdk.post(
        "mnist/dataset",
        {
            "name": "train",
            "input_data_size": len(images_raw),
            "label_data_size": len(labels_raw),
        },
    )
    assert response.status_code == 200, response.content
    created = response.json()
    assert set(created) == {"uuid", "name", "uuid_input_file", "uuid_label_file"}
    assert created["name"] == "train"

    progress = sdk.get("dataset/progress", uuid=created["uuid"]).json()
    assert progress["uuid"] == created["uuid"] and progress["complete"] is False
    _upload_all(created["uuid_input_file"], images_raw)
    _upload_all(created["uuid_label_file"], labels_raw)
    assert sdk.get("dataset/progress", uuid=created["uuid"]).json()["complete"] is True

    # Wrong file uuids for this dataset: 404; missing: 400.
    swapped = {
        "uuid": created["uuid"],
        "uuid_input_file": created["uuid_label_file"],
        "uuid_label_file": created["uuid_input_file"],
    }
    assert sdk.put("mnist/dataset", swapped).status_code == 404
    assert sdk.put("mnist/dataset", {"uuid": created["uuid"]}).status_code == 400
    finalized = sdk.put("mnist/dataset", {k: created[k] for k in swapped})
    assert finalized.status_code == 200, finalized.content
    assert finalized.json()["lines"] == 6
    # Finalizing twice: 409.
    assert sdk.put("mnist/dataset", {k: created[k] for k in swapped}).status_code == 409

    got = sdk.get("dataset", uuid=created["uuid"]).json()
    assert {
        "inputs",
        "lines",
        "location",
        "name",
        "outputs",
        "owner_id",
        "project_id",
        "type",
        "uuid",
        "visibility",
    } <= set(got)
    assert (got["inputs"], got["outputs"], got["lines"], got["type"]) == (12, 10, 6, "mnist")
    assert (got["owner_id"], got["project_id"]) == ("bob", world.project.pk)
    assert not got["location"].startswith("/")

    listing = sdk.get("dataset/all").json()
    assert listing["header"] == ["uuid", "project_id", "owner_id", "visibility", "name", "type"]
    assert [
        created["uuid"],
        world.project.pk,
        "bob",
        "shared",
        "train",
        "mnist",
    ] in listing["body"]

    # A duplicate name: 409, and no upload session is left behind.
    sessions = UploadSession.objects.count()
    dup = sdk.post("mnist/dataset", {"name": "train", "input_data_size": 5, "label_data_size": 5})
    assert dup.status_code == 409
    assert UploadSession.objects.count() == sessions

    assert sdk.delete("dataset", uuid=created["uuid"]).status_code == 200
    assert not Dataset.objects.filter(pk=created["uuid"]).exists()
    assert sdk.get("dataset", uuid=created["uuid"]).status_code == 404


def test_a_dataset_deleted_while_it_is_finalized_stays_deleted(world, monkeypatch):
    """The SDK's DELETE lands while its PUT parses the uploads: the delete wins (the PUT used to
    save its stale copy of the row, inserting it again, and publish the files)."""
    sdk = SDK(token_for("bob", PASSWORD))
    images, labels = mnist_arrays(n=6)
    images_raw, labels_raw = idx_bytes(images), idx_bytes(labels)
    sizes = {"input_data_size": len(images_raw), "label_data_size": len(labels_raw)}
    created = sdk.post("mnist/dataset", {"name": "doomed", **sizes}).json()
    _upload_all(created["uuid_input_file"], images_raw)
    _upload_all(created["uuid_label_file"], labels_raw)
    parse = dataset_uploads.parse_mnist
    deleted = []

    def parse_then_delete(*args, **kwargs):
        parsed = parse(*args, **kwargs)
        deleted.append(sdk.delete("dataset", uuid=created["uuid"]).status_code)
        return parsed

    monkeypatch.setattr(dataset_uploads, "parse_mnist", parse_then_delete)
    directory = final_dir(Dataset.objects.get(pk=created["uuid"]))
    body = {k: created[k] for k in ("uuid", "uuid_input_file", "uuid_label_file")}
    finalized = sdk.put("mnist/dataset", body)
    assert deleted == [200]
    assert finalized.status_code == 404, finalized.content
    assert set(finalized.json()) == {"error"} and "deleted" in finalized.json()["error"]
    assert not Dataset.objects.filter(pk=created["uuid"]).exists()
    assert sdk.get("dataset", uuid=created["uuid"]).status_code == 404
    assert not directory.exists()  # no files published for a dataset that is gone


def test_dataset_input_errors(world):
    sdk = SDK(token_for("bob", PASSWORD))
    assert sdk.get("dataset", uuid="not-a-uuid").status_code == 400
    assert sdk.get("dataset").status_code == 400
    assert sdk.get("dataset", uuid=str(uuid.uuid4())).status_code == 404
    assert sdk.delete("dataset", uuid="nope").status_code == 400
    assert sdk.get("dataset/progress", uuid="nope").status_code == 400
    assert sdk.post("mnist/dataset", {"name": "x", "input_data_size": 5}).status_code == 400
    bad_size = {"name": "x", "input_data_size": "5", "label_data_size": 5}
    assert sdk.post("mnist/dataset", bad_size).status_code == 400
    assert sdk.post("csv/dataset", {"name": "x", "input_data_size": 0}).status_code == 400
    assert sdk.put("mnist/dataset", {"uuid": "nope"}).status_code == 400


def test_csv_dataset_and_bad_content(world):
    sdk = SDK(token_for("bob", PASSWORD))
    content = b"a,b,c\n1,2,3\n4,5,6\n"
    created = sdk.post("csv/dataset", {"name": "table", "input_data_size": len(content)}).json()
    assert set(created) == {"uuid", "name", "uuid_input_file"}
    # Finalizing before the upload completed: 400.
    body = {"uuid": created["uuid"], "uuid_input_file": created["uuid_input_file"]}
    incomplete = sdk.put("csv/dataset", body)
    assert incomplete.status_code == 400 and "incomplete" in incomplete.json()["error"]
    # An upload still arriving fails nothing: the client sends the rest and finalizes again.
    assert Dataset.objects.get(pk=created["uuid"]).status == Dataset.Status.UPLOADING
    assert sdk.get("dataset/progress", uuid=created["uuid"]).json()["complete"] is False
    _upload_all(created["uuid_input_file"], content[:7])
    assert sdk.put("csv/dataset", body).status_code == 400
    _upload_all(created["uuid_input_file"], content)
    body = {"uuid": created["uuid"], "uuid_input_file": created["uuid_input_file"]}
    # The CSV route does not finalize MNIST datasets and vice versa.
    assert (
        sdk.put("mnist/dataset", {**body, "uuid_label_file": str(uuid.uuid4())}).status_code == 400
    )
    done = sdk.put("csv/dataset", body)
    assert done.status_code == 200, done.content
    assert (done.json()["lines"], done.json()["inputs"], done.json()["type"]) == (2, 3, "csv")


def test_viewer_cannot_write_and_member_cannot_delete_others(world):
    images, labels = mnist_arrays(n=3)
    dataset = dataset_imports.dataset_import_mnist(
        project=world.project,
        actor=world.owner,
        name="owned",
        images=io.BytesIO(idx_bytes(images)),
        labels=io.BytesIO(idx_bytes(labels)),
    )
    viewer = SDK(token_for("carol", PASSWORD))
    assert viewer.get("dataset", uuid=str(dataset.pk)).status_code == 200
    assert viewer.post("csv/dataset", {"name": "v", "input_data_size": 3}).status_code == 401
    assert viewer.delete("dataset", uuid=str(dataset.pk)).status_code == 401
    member = SDK(token_for("bob", PASSWORD))
    assert member.delete("dataset", uuid=str(dataset.pk)).status_code == 401
    assert Dataset.objects.filter(pk=dataset.pk).exists()


def test_a_user_without_a_project_works_in_a_home_project(world):
    """Hanami users always work in a project: one without any gets a home project of their own
    (the global admin here), and nothing of other projects shows there."""
    admin = SDK(token_for("root", PASSWORD))
    response = admin.get("dataset/all")
    assert response.status_code == 200 and response.json()["body"] == []
    home = Project.objects.get(pk="root")
    assert Membership.objects.filter(project=home, user__username="root", role="admin").exists()
    assert admin.get("dataset/all").status_code == 200
    assert Project.objects.filter(pk__startswith="root").count() == 1, "created once"


def test_a_token_whose_project_was_deleted_falls_back_to_the_home_project(world):
    """The SDK's own API test deletes every project, the admin's token project included, then
    goes on with that token: it lands in the caller's home project."""
    bob = SDK(token_for("bob", PASSWORD))
    created = bob.post("csv/dataset", {"name": "t", "input_data_size": 10}).json()
    assert Dataset.objects.get(pk=created["uuid"]).project_id == world.project.pk
    from apps.accounts.services import project_delete

    project_delete(project=world.project)  # (its "proj-..." id is not a Hanami id)
    response = bob.get("dataset/all")
    assert response.status_code == 200 and response.json()["body"] == []
    home = Project.objects.get(pk="bob")
    assert list(home.memberships.values_list("user__username", flat=True)) == ["bob"]
    # A project that exists but is not the caller's is never a fallback: still 404.
    mallory = SDK(token_for("mallory", PASSWORD))
    token = AccessToken(mallory.token)
    token["project_id"] = world.other_project.pk
    assert SDK(str(token)).get("dataset/all").status_code == 200
    foreign = AccessToken(bob.token)
    foreign["project_id"] = world.other_project.pk
    response = SDK(str(foreign)).get("dataset/all")
    assert response.status_code == 404


def test_dataset_upload_paths_of_later_sdk_releases(world):
    """`dataset.upload_mnist_files` / `upload_csv_files` of the SDK at upstream OpenHanami commit
    84e633ac POST and PUT `/control/v1/dataset/upload/mnist` and `.../dataset/upload/csv` (no
    Content-Type, JSON body); before the aliases these answered 404 and the upload never began."""
    sdk = SDK(token_for("bob", PASSWORD))
    images, labels = mnist_arrays(n=5)
    images_raw, labels_raw = idx_bytes(images), idx_bytes(labels)
    init = {"name": "up", "input_data_size": len(images_raw), "label_data_size": len(labels_raw)}
    created = sdk.post("dataset/upload/mnist", init)
    assert created.status_code == 200, created.content
    created = created.json()
    assert set(created) == {"uuid", "name", "uuid_input_file", "uuid_label_file"}
    _upload_all(created["uuid_input_file"], images_raw)
    _upload_all(created["uuid_label_file"], labels_raw)
    assert sdk.get("dataset/progress", uuid=created["uuid"]).json()["complete"] is True
    body = {k: created[k] for k in ("uuid", "uuid_input_file", "uuid_label_file")}
    done = sdk.put("dataset/upload/mnist", body)
    assert done.status_code == 200, done.content
    assert (done.json()["lines"], done.json()["type"]) == (5, "mnist")
    assert sdk.put("dataset/upload/mnist", body).status_code == 409

    content = b"a,b\n1,2\n"
    csv = sdk.post("dataset/upload/csv", {"name": "t", "input_data_size": len(content)}).json()
    assert set(csv) == {"uuid", "name", "uuid_input_file"}
    _upload_all(csv["uuid_input_file"], content)
    done = sdk.put("dataset/upload/csv", {k: csv[k] for k in ("uuid", "uuid_input_file")})
    assert done.status_code == 200, done.content
    assert (done.json()["lines"], done.json()["type"]) == (1, "csv")
    # Bad input on the alias answers in the gateway's format, like the original path.
    bad = sdk.post("dataset/upload/mnist", {"name": "x"})
    assert bad.status_code == 400 and set(bad.json()) == {"error"}
