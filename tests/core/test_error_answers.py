"""Errors Django answers outside any view come in the format of the surface that owns the path
(apps.core.errors): a Host that is not one of ALLOWED_HOSTS (a client calling Orchard by another
name: Label Studio in a container, say), an error raised in middleware, a refusal there. Django's
pages are HTML, which none of the API clients reads; the console keeps them."""

import json

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client, override_settings

from tests.asgi import exchange, http_scope

pytestmark = pytest.mark.django_db(transaction=True)

# path -> (content type, how the message is read from the body)
SURFACES = {
    "/api/projects": ("application/json", lambda b: json.loads(b)["error"]["message"]),
    "/control/v1/dataset/all": ("application/json", lambda b: json.loads(b)["error"]),
    "/ml/some-backend/predict": ("application/json", lambda b: json.loads(b)["detail"]),
    "/orchestrator/learnuplet": ("application/json", lambda b: json.loads(b)["Error"]),
    "/check": ("text/plain", lambda b: b.decode()),
}


async def _call(path: str, host: bytes) -> tuple[int, dict, bytes]:
    sent = await exchange(
        http_scope("GET", path, [(b"host", host)]),
        [{"type": "http.request", "body": b"", "more_body": False}],
    )
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


@pytest.mark.asyncio
@pytest.mark.parametrize("path", list(SURFACES))
async def test_a_host_not_served_answers_in_the_surfaces_format(path):
    status, headers, body = await _call(path, b"ls.internal:8080")
    content_type, message_of = SURFACES[path]
    assert status == 400
    assert headers["content-type"].startswith(content_type)
    message = message_of(body)
    assert "ls.internal:8080" in message and "ALLOWED_HOSTS" in message
    if path.startswith("/api/"):
        assert json.loads(body)["error"]["code"] == "BAD_REQUEST"
    if path.startswith("/ml/"):
        assert json.loads(body)["status"] == 400


@pytest.mark.asyncio
async def test_the_console_keeps_djangos_page():
    status, headers, _ = await _call("/", b"ls.internal:8080")
    assert status == 400 and headers["content-type"].startswith("text/html")


class _Raising:
    """A middleware that fails as a broken or refusing one would (before any view)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.headers.get("X-Fail") == "deny":
            raise PermissionDenied
        if request.headers.get("X-Fail") == "crash":
            raise RuntimeError("secret detail that must not reach the client")
        return self.get_response(request)


@pytest.fixture
def failing_client(settings):
    middleware = [*settings.MIDDLEWARE, "tests.core.test_error_answers._Raising"]
    with override_settings(MIDDLEWARE=middleware):
        yield Client(raise_request_exception=False)


@pytest.mark.parametrize("path", list(SURFACES))
def test_an_error_in_middleware_answers_500_in_the_surfaces_format(failing_client, path):
    response = failing_client.get(path, headers={"X-Fail": "crash"})
    content_type, message_of = SURFACES[path]
    assert response.status_code == 500
    assert response["Content-Type"].startswith(content_type)
    assert message_of(response.content) == "Internal server error."
    assert b"secret" not in response.content


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/projects", 403),
        ("/ml/some-backend/predict", 403),
        ("/orchestrator/learnuplet", 403),
        ("/check", 403),
        # The Hanami SDK knows no 403: its gateway refuses with 401, here too.
        ("/control/v1/dataset/all", 401),
    ],
)
def test_a_refusal_in_middleware_answers_in_the_surfaces_format(failing_client, path, status):
    response = failing_client.get(path, headers={"X-Fail": "deny"})
    content_type, message_of = SURFACES[path]
    assert response.status_code == status
    assert response["Content-Type"].startswith(content_type)
    assert message_of(response.content) == "Permission denied."


def test_the_console_keeps_djangos_error_pages(failing_client):
    response = failing_client.get("/", headers={"X-Fail": "crash"})
    assert response.status_code == 500 and response["Content-Type"].startswith("text/html")
