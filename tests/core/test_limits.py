"""Oversized bodies are refused with 413 before the body is read: inside Django (test client)
and in the ASGI layer that daphne/uvicorn run (declared Content-Length and chunked bodies)."""

import json

import pytest
from channels.testing import HttpCommunicator

from apps.accounts.models import Project
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_django_refuses_a_declared_oversized_json_body(world, settings):
    settings.API_MAX_BODY_BYTES = 100
    response = client_for(world.member).generic(
        "POST", "/api/projects", json.dumps({"name": "x" * 200}), content_type="application/json"
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert Project.objects.count() == 2


def _asgi_app():
    from config.asgi import application

    return application


async def _token(world):
    from channels.db import database_sync_to_async

    from apps.accounts.services import token_pair_for

    pair = await database_sync_to_async(token_pair_for)(user=world.member)
    return pair["access"].encode()


@pytest.mark.asyncio
async def test_asgi_refuses_declared_length_without_reading(world, settings):
    settings.API_MAX_BODY_BYTES = 1000
    communicator = HttpCommunicator(
        _asgi_app(),
        "POST",
        "/api/projects",
        body=b"{}",
        headers=[
            (b"content-type", b"application/json"),
            (b"content-length", b"5000000"),
            (b"authorization", b"Bearer " + await _token(world)),
        ],
    )
    response = await communicator.get_response(timeout=5)
    assert response["status"] == 413
    assert json.loads(response["body"])["error"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.asyncio
async def test_asgi_counts_bodies_sent_without_a_length(world, settings):
    settings.API_MAX_BODY_BYTES = 1000
    app = _asgi_app()
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/api/projects",
        "raw_path": b"/api/projects",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer " + await _token(world)),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    chunks = [{"type": "http.request", "body": b"x" * 600, "more_body": True} for _ in range(5)]
    sent = []

    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [413]
    assert await Project.objects.acount() == 2


@pytest.mark.asyncio
async def test_asgi_serves_normal_requests(world):
    communicator = HttpCommunicator(
        _asgi_app(),
        "GET",
        "/api/projects",
        headers=[(b"host", b"localhost"), (b"authorization", b"Bearer " + await _token(world))],
    )
    response = await communicator.get_response(timeout=5)
    assert response["status"] == 200
    assert json.loads(response["body"])["status"] == "ok"
