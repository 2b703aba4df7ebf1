"""Regressions found by fuzzing the HTTP surface (schemathesis on /api/schema/, OPTIONS on every
route, odd query strings and bodies): none of them may answer a 5xx."""

import json
import re

import jsonschema
import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from tests.conftest import client_for

pytestmark = pytest.mark.django_db

_SAMPLE = {
    "project_id": None,  # filled with the world's project
    "split_index": "0",
    "filename": "cat/a.png",
    "username": "alice",
}
_UUID = "00000000-0000-4000-8000-000000000000"


def _routes(patterns=None, prefix=""):
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern)


def _concrete(route: str, project_id: str) -> str:
    """A request path for `route` with sample values for its kwargs."""
    values = dict(_SAMPLE, project_id=project_id)

    def value(name: str) -> str:
        return values.get(name, _UUID)

    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: value(m.group(1)), route)
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: value(m.group(1)), path)
    path = re.sub(r"\(\?:/\.\*\)\?", "", path)
    return "/" + path.replace("^", "").replace("$", "")


def test_options_never_answers_a_server_error(world):
    routes = [r for r in _routes() if not r.startswith("admin/")]
    assert len(routes) > 100
    paths = [_concrete(route, str(world.project.pk)) for route in routes]
    for path in paths:
        resolve(path)  # each sample path reaches its own route
    failures = []
    for client in (client_for(None), client_for(world.owner)):
        client.raise_request_exception = False
        for path in paths:
            response = client.options(path)
            if response.status_code >= 500:
                failures.append((path, response.status_code, response.content[:300]))
    assert failures == []


def test_options_describes_a_write_route_without_an_object_lookup(world):
    client = client_for(world.owner)
    # A view that validates with serializers of its own: no `actions`, no error.
    response = client.options(f"/api/projects/{world.project.pk}/uploads")
    assert response.status_code == 200
    assert response.json()["data"]["name"]
    # A PUT route of the Hanami gateway (DRF's metadata called get_object() with a `pk` kwarg).
    assert client.options("/control/v1/cluster/set_mode").status_code == 200


# -- pagination -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "page=99999999999999999999999",
        f"page={10**30}",
        "page=9223372036854775808",
        "page=4611686018427387904&page_size=200",
        "page=2&page_size=99999999999999999999999",
    ],
)
def test_a_page_past_any_end_is_empty_not_a_server_error(world, query):
    """Offsets past 64 bits reached the database, which answered an OverflowError (500)."""
    client = client_for(world.owner)
    client.raise_request_exception = False
    response = client.get(f"/api/projects?{query}")
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["total"] == 1
    assert data["items"] == [] and data["page_size"] <= 200


@pytest.mark.parametrize(
    "query",
    [
        "page=-1",
        "page=0",
        "page=abc",
        "page=1e3",
        "page=" + "9" * 5000,
        "page=%2B1",
        "page=1_0",
        "page=%00",
        "page_size=0",
        "page_size=-5",
        "page_size=x",
        "page_size=",  # not an integer either (schemathesis: an empty value was the default)
        "page=2&page=",
    ],
)
def test_malformed_page_parameters_answer_the_validation_envelope(world, query):
    client = client_for(world.owner)
    client.raise_request_exception = False
    response = client.get(f"/api/projects?{query}")
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["status"] == "error" and body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["message"].startswith("page")


# -- deeply nested JSON -----------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT])
def test_deep_json_on_the_main_api_answers_the_validation_envelope(world, body):
    from apps.accounts.models import Project

    client = client_for(world.owner)
    client.raise_request_exception = False
    for path in ("/api/projects", f"/api/projects/{world.project.pk}/uploads"):
        response = client.generic("POST", path, body, content_type="application/json")
        assert response.status_code == 422, (path, response.content[:300])
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and "nested too deeply" in error["message"]
    assert Project.objects.count() == 2


def test_deep_json_on_the_hanami_gateway_answers_400_in_its_shape(world):
    from django.test import Client

    client = Client(raise_request_exception=False)
    response = client.generic("POST", "/control/v1/token", DEEP, content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()) == {"error"} and "nested too deeply" in response.json()["error"]


def test_deep_json_on_the_label_studio_surface_answers_400_in_its_shape(world):
    from django.test import Client

    from tests.mlbackend.labelstudio_helpers import make_backend

    backend = make_backend(world.project, world.owner)
    client = Client(raise_request_exception=False)
    for route in ("setup", "predict", "webhook"):
        response = client.post(f"/ml/{backend.pk}/{route}", DEEP, content_type="application/json")
        assert response.status_code == 400, (route, response.content[:300])
        assert response.json()["status"] == 400
        assert "nested too deeply" in response.json()["detail"]


def test_deep_json_on_the_orchestrator_surface_answers_400_in_its_shape(world):
    from tests.marketplace.conftest import Orchestrator

    orchestrator = Orchestrator(world.owner.username)
    orchestrator.client.raise_request_exception = False
    response = orchestrator.post("problem", raw=DEEP)
    assert response.status_code == 400
    assert set(response.json()) == {"Error"} and "nested too deeply" in response.json()["Error"]


def test_deep_json_params_on_labelprop_answer_400_as_short_text(world, settings):
    import numpy as np

    from tests.mlbackend.labelprop_helpers import Napari, enable, multipart, npz_bytes

    enable(settings, world.project)
    client = Napari().client
    client.raise_request_exception = False
    body, content_type = multipart({"arrays": npz_bytes(mask=np.zeros(2)), "params": DEEP.encode()})
    response = client.generic("POST", "/inference", body, content_type)
    assert response.status_code == 400, response.content[:300]
    assert len(response.content) < 200 and b"<html" not in response.content


# -- schemathesis findings (GET /api/schema/, a project admin's token) --------------------------


def _openapi(client) -> dict:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return json.loads(response.content)


def _json_schema(node):
    """OpenAPI 3.0's `nullable` as JSON Schema (jsonschema does not know the keyword)."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _json_schema(value) for key, value in node.items()}
    if node.pop("nullable", False):
        node = {"anyOf": [node, {"type": "null"}]}
    return node


def _assert_matches_schema(openapi: dict, path: str, method: str, response) -> None:
    operation = openapi["paths"][path][method]
    declared = (
        operation["responses"].get(str(response.status_code)) or operation["responses"]["default"]
    )
    schema = dict(declared["content"]["application/json"]["schema"])
    schema["components"] = openapi["components"]
    validator = jsonschema.Draft7Validator(
        _json_schema(schema), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(response.json())
    ]
    assert errors == [], (path, method, response.status_code)


def test_me_of_a_user_without_email_matches_the_schema(world):
    client = client_for(world.owner)
    assert world.owner.email == ""
    response = client.get("/api/auth/me")
    assert response.status_code == 200
    _assert_matches_schema(_openapi(client), "/api/auth/me", "get", response)


def test_workspace_of_a_project_admin_matches_the_schema(world):
    client = client_for(world.owner)  # not a global admin: no data_dir in the answer
    response = client.get("/api/system/workspace")
    assert response.status_code == 200 and "data_dir" not in response.json()["data"]
    _assert_matches_schema(_openapi(client), "/api/system/workspace", "get", response)


def test_page_size_above_the_cap_is_documented_as_valid(world, settings):
    """page_size=201 was declared invalid (`maximum`) yet answered 200: the size is capped, as
    the studio API says, and the schema no longer calls a larger one invalid."""
    openapi = _openapi(client_for(world.owner))
    parameters = openapi["paths"]["/api/projects"]["get"]["parameters"]
    size = next(p for p in parameters if p["name"] == "page_size")
    assert "maximum" not in size["schema"]
    response = client_for(world.owner).get(f"/api/projects?page_size={settings.PAGE_SIZE_MAX + 1}")
    assert response.status_code == 200
    assert response.json()["data"]["page_size"] == settings.PAGE_SIZE_MAX


def test_json_routes_document_json_bodies_only(world):
    """Form encodings (every value a string, "" meaning "omitted") are not documented where a
    JSON body is: schemathesis' `name=` and `is_project_admin=0` were accepted as valid."""
    openapi = _openapi(client_for(world.owner))
    forms = []
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content and set(content) != {"application/json"}:
                forms.append((method, path))
    assert forms == []
    # Upload routes keep their multipart body.
    upload = openapi["paths"]["/api/projects/{project_id}/datasets/mnist"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]


@pytest.mark.parametrize(
    ("path", "method", "body", "field"),
    [
        ("/api/projects/{p}", "patch", {"name": ""}, "name"),
        ("/api/projects/{p}/members/bob", "patch", {"is_project_admin": 0}, "is_project_admin"),
        ("/api/projects/{p}/members/bob", "patch", {"is_project_admin": "0"}, "is_project_admin"),
        ("/api/projects/{p}/uploads", "post", {"filename": 0, "size": 1}, "filename"),
        ("/api/projects/{p}/uploads", "post", {"filename": "f", "size": "1"}, "size"),
        ("/api/projects/{p}/uploads", "post", {"filename": "f", "size": True}, "size"),
    ],
)
def test_json_values_of_the_wrong_type_are_refused(world, path, method, body, field):
    from apps.accounts.models import Membership
    from apps.datasets.models import UploadSession

    client = client_for(world.owner)
    before = (
        list(Membership.objects.values_list("pk", "role", "is_project_admin").order_by("pk")),
        UploadSession.objects.count(),
        world.project.name,
    )
    response = getattr(client, method)(path.format(p=world.project.pk), body, format="json")
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and field in error["details"]
    world.project.refresh_from_db()
    after = (
        list(Membership.objects.values_list("pk", "role", "is_project_admin").order_by("pk")),
        UploadSession.objects.count(),
        world.project.name,
    )
    assert after == before


# -- NUL characters (PostgreSQL: "text fields cannot contain NUL (0x00) bytes", a 500) ----------


@pytest.mark.parametrize(
    "path",
    [
        "/api/projects/a%00b",
        "/api/projects/{p}/members/a%00b",
        "/api/training/{p}/runs/a%00",
        "/api/export/{p}/a%00",
        "/api/users/a%00b",
    ],
)
def test_a_nul_in_a_url_id_is_not_found(world, path):
    client = client_for(world.global_admin)
    client.raise_request_exception = False
    response = client.get(path.format(p=world.project.pk))
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_a_nul_in_a_query_value_is_refused(world):
    client = client_for(world.owner)
    client.raise_request_exception = False
    response = client.get(f"/api/projects/{world.project.pk}/tasks?kind=a%00b")
    assert response.status_code == 422, response.content
    assert "NUL" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/projects/{p}/tasks", {"name": "t", "kind": "train", "params": {"a": "b\u0000"}}),
        ("/api/export/{p}", {"format": "onnx", "options": {"k\u0000": 1}}),
        ("/api/projects", {"name": "n", "x\u0000": 1}),
    ],
)
def test_a_nul_in_a_json_string_is_refused(world, path, body):
    from apps.exports.models import Export
    from apps.tasks.models import Task

    client = client_for(world.owner)
    client.raise_request_exception = False
    response = client.post(path.format(p=world.project.pk), body, format="json")
    assert response.status_code == 422, response.content
    assert "NUL" in response.json()["error"]["message"]
    assert Task.objects.count() == 0 and Export.objects.count() == 0


def test_a_nul_on_the_gateways_is_refused_in_their_shapes(world):
    from django.test import Client

    from tests.marketplace.conftest import Orchestrator

    client = Client(raise_request_exception=False)
    body = '{"id": "alice\\u0000", "password": "x"}'
    response = client.generic("POST", "/control/v1/token", body, content_type="application/json")
    assert response.status_code == 400 and "NUL" in response.json()["error"]
    orchestrator = Orchestrator(world.owner.username)
    orchestrator.client.raise_request_exception = False
    response = orchestrator.post("problem", {"name": "p\u0000"})
    assert response.status_code == 400 and "NUL" in response.json()["Error"]


# -- lone surrogates (the escape "\ud800": no UTF-8 form, no database stores it) ----------------


def _lone(body: str) -> str:
    """`body` with its @ replaced by the JSON text of a string holding a lone surrogate."""
    return body.replace("@", '"a\\ud800b"')


def test_a_lone_surrogate_is_refused_on_every_json_surface(world):
    """It answered 500 wherever such a string reached the database unvalidated (Label Studio's
    project key, a JSON column), and 422 only where a serializer's CharField caught it."""
    from django.test import Client

    from apps.mlbackend.models import LabelStudioProject
    from apps.tasks.models import Task
    from tests.marketplace.conftest import Orchestrator
    from tests.mlbackend.labelstudio_helpers import TEXT_CONFIG, ls_headers, make_backend

    main = client_for(world.owner)
    main.raise_request_exception = False
    body = _lone('{"name": "t", "kind": "train", "params": {"note": @}}')
    response = main.generic(
        "POST", f"/api/projects/{world.project.pk}/tasks", body, content_type="application/json"
    )
    assert response.status_code == 422, response.content
    assert "surrogate" in response.json()["error"]["message"]

    plain = Client(raise_request_exception=False)
    body = _lone('{"id": @, "password": "x"}')
    response = plain.generic("POST", "/control/v1/token", body, content_type="application/json")
    assert response.status_code == 400 and "surrogate" in response.json()["error"]

    orchestrator = Orchestrator(world.owner.username)
    orchestrator.client.raise_request_exception = False
    response = orchestrator.post("problem", raw=_lone('{"name": @}'))
    assert response.status_code == 400 and "surrogate" in response.json()["Error"]

    backend = make_backend(world.project, world.owner, config=TEXT_CONFIG)
    for route, body in [
        ("setup", _lone('{"project": @, "schema": "<View/>"}')),
        ("predict", _lone('{"tasks": [], "project": @}')),
        ("webhook", _lone('{"action": "START_TRAINING", "project": {"id": @}}')),
        ("train", _lone('{"annotations": [], "project": @}')),
        ("versions", _lone('{"project": @}')),
    ]:
        response = plain.generic(
            "POST",
            f"/ml/{backend.pk}/{route}",
            body,
            content_type="application/json",
            **ls_headers(),
        )
        assert response.status_code == 400, (route, response.content)
        assert response.json()["status"] == 400 and "surrogate" in response.json()["detail"]
    assert Task.objects.count() == 0
    assert not LabelStudioProject.objects.exists()


def test_the_schema_keeps_its_format_parameter(client):
    """`?format=` is no renderer override elsewhere (the studio plan's parameter), but the schema
    still honours `?format=json` as documentation tools send it."""
    r = client.get("/api/schema/?format=json")
    assert r.status_code == 200 and "json" in r["Content-Type"]
    assert r.json()["openapi"].startswith("3.")


def test_a_project_name_over_its_max_length_as_sent_is_refused(world):
    """The schema's maxLength holds for the name as sent (blanks around it were trimmed first,
    so a name of 201 characters with a leading space was accepted)."""
    client = client_for(world.owner)
    r = client.post("/api/projects", {"name": " " + "x" * 200}, format="json")
    assert r.status_code == 422, r.content
    r = client.post("/api/projects", {"name": "  Spaced  "}, format="json")
    assert r.status_code == 200 and r.json()["data"]["name"] == "Spaced"
    assert client.post("/api/projects", {"name": "   "}, format="json").status_code == 422
