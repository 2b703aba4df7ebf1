"""An unknown path answers 404 in the format of the surface it falls under, for every method,
through the ASGI application daphne serves: the main API's error envelope under /api/, Hanami's
`{"error": ...}` under /control/ (its SDK reads the body as JSON), never Django's HTML page. Known
routes are not shadowed by the catch-alls (they come last)."""

import json

import pytest

from tests.asgi import exchange, http_scope

pytestmark = pytest.mark.django_db(transaction=True)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


async def _call(method: str, url: str, body: bytes = b"", headers=()) -> tuple[int, dict, bytes]:
    sent = await exchange(
        http_scope(method, url, list(headers)),
        [{"type": "http.request", "body": body, "more_body": False}],
    )
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.lower(): v for k, v in start["headers"]}, answer


@pytest.mark.asyncio
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "url",
    ["/api/nope", "/api/projects/1/nope/deeper", "/api", "/api/projects/", "/api/auth/me/x"],
)
async def test_unknown_api_route_answers_the_envelope(method, url):
    status, headers, body = await _call(
        method, url, b'{"a": 1}', [(b"content-type", b"application/json")]
    )
    assert status == 404
    assert headers[b"content-type"].startswith(b"application/json")
    if method == "HEAD":
        return  # the server drops a HEAD answer's body (daphne's Twisted request does)
    answer = json.loads(body)
    assert answer["status"] == "error"
    assert answer["error"]["code"] == "NOT_FOUND"
    assert url in answer["error"]["message"]


@pytest.mark.asyncio
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("url", ["/control/v1/nope", "/control/v2/dataset/all", "/control"])
async def test_unknown_hanami_route_answers_hanami_json(method, url):
    # The SDK sends its JSON with no Content-Type and the token in X-Auth-Token.
    status, headers, body = await _call(method, url, b"{}", [(b"x-auth-token", b"anything")])
    assert status == 404
    assert headers[b"content-type"].startswith(b"application/json")
    if method != "HEAD":
        assert json.loads(body) == {"error": f"Unknown endpoint: {url}"}


@pytest.mark.asyncio
async def test_known_routes_are_not_shadowed(world):
    from channels.db import database_sync_to_async

    from apps.accounts.services import token_pair_for

    token = (await database_sync_to_async(token_pair_for)(user=world.owner))["access"]
    auth = [(b"authorization", f"Bearer {token}".encode())]
    status, _, body = await _call("GET", "/api/projects", headers=auth)
    assert status == 200 and str(world.project.pk) in body.decode()
    # A known route with a method it does not take is still 405, not the catch-all's 404.
    status, _, body = await _call("PUT", "/api/projects", b"{}", auth)
    assert status == 405 and json.loads(body)["error"]["code"] == "METHOD_NOT_ALLOWED"
    # The schema and the docs are under /api/ too, before the catch-all.
    status, _, _ = await _call("GET", "/api/schema/?format=json")
    assert status == 200
    # Hanami's known routes still ask for a token first.
    status, _, body = await _call("GET", "/control/v1/dataset/all")
    assert status == 401 and set(json.loads(body)) == {"error"}
