"""Oversized bodies are refused with 413 before the body is read: inside Django (test client)
and in the ASGI layer that daphne/uvicorn run (declared Content-Length and chunked bodies)."""

import json

import pytest
from channels.testing import HttpCommunicator

from apps.accounts.models import Project
from tests.asgi import exchange, http_scope
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
    scope = http_scope(
        "POST",
        "/api/projects",
        [
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer " + await _token(world)),
        ],
    )
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


# -- only upload routes take UPLOAD_MAX_BYTES, whatever the Content-Type says --------------------


@pytest.mark.parametrize(
    "content_type", ["application/octet-stream", "application/zip", "multipart/form-data; b=x"]
)
def test_an_upload_content_type_does_not_lift_the_limit_of_other_routes(
    world, settings, content_type
):
    settings.API_MAX_BODY_BYTES = 1000
    response = client_for(world.member).generic(
        "POST", "/api/projects", b"x" * 5000, content_type=content_type
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "API_MAX_BODY_BYTES" in response.json()["error"]["message"]
    assert Project.objects.count() == 2


def _upload_session(world, size: int) -> str:
    response = client_for(world.owner).post(
        f"/api/projects/{world.project.pk}/uploads", {"filename": "f", "size": size}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()["data"]["id"]


def test_upload_routes_still_take_bodies_above_the_api_limit(world, settings):
    upload = _upload_session(world, 5000)
    settings.API_MAX_BODY_BYTES = 1000
    response = client_for(world.owner).put(
        f"/api/projects/{world.project.pk}/uploads/{upload}?position=0",
        b"x" * 5000,
        content_type="application/octet-stream",
    )
    assert response.status_code == 200, response.content
    assert response.json()["data"]["received_bytes"] == 5000


@pytest.mark.asyncio
async def test_asgi_refuses_a_declared_octet_stream_on_a_non_upload_route(world, settings):
    settings.API_MAX_BODY_BYTES = 1000
    communicator = HttpCommunicator(
        _asgi_app(),
        "POST",
        "/api/projects",
        body=b"{}",
        headers=[
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(60 * 1024 * 1024).encode()),
            (b"authorization", b"Bearer " + await _token(world)),
        ],
    )
    response = await communicator.get_response(timeout=5)
    assert response["status"] == 413
    assert "API_MAX_BODY_BYTES" in json.loads(response["body"])["error"]["message"]


async def _asgi_call(path, headers, chunks):
    scope = http_scope("PUT" if "/uploads/" in path else "POST", path, headers)
    pending = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    pending.append({"type": "http.request", "body": b"", "more_body": False})
    return await exchange(scope, pending)  # the client stays connected until the answer is sent


@pytest.mark.asyncio
async def test_asgi_counts_chunked_octet_streams_on_non_upload_routes(world, settings):
    settings.API_MAX_BODY_BYTES = 1000
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"authorization", b"Bearer " + await _token(world)),
    ]
    sent = await _asgi_call("/api/projects", headers, [b"x" * 600] * 5)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [413]
    assert await Project.objects.acount() == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("declared", [True, False])
async def test_asgi_answers_the_hanami_sdk_a_400_for_a_big_body(world, settings, declared):
    """Declared or counted, a body over the limit under /control/ is Hanami's 400 `{"error"}`."""
    settings.API_MAX_BODY_BYTES = 1000
    headers = [(b"x-auth-token", await _token(world))]
    if declared:
        headers.append((b"content-length", b"3000"))
    sent = await _asgi_call("/control/v1/cluster", headers, [b"x" * 600] * 5)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [400]
    assert json.loads(sent[-1]["body"]) == {"error": MESSAGE}


@pytest.mark.asyncio
async def test_asgi_upload_route_takes_a_body_above_the_api_limit(world, settings):
    from channels.db import database_sync_to_async

    from apps.accounts.services import token_pair_for

    upload = await database_sync_to_async(_upload_session)(world, 3000)
    settings.API_MAX_BODY_BYTES = 1000
    token = (await database_sync_to_async(token_pair_for)(user=world.owner))["access"]
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", b"3000"),
        (b"authorization", b"Bearer " + token.encode()),
    ]
    path = f"/api/projects/{world.project.pk}/uploads/{upload}?position=0"
    sent = await _asgi_call(path, headers, [b"x" * 600] * 5)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [200], sent
    assert json.loads(sent[-1]["body"])["data"]["received_bytes"] == 3000


MESSAGE = "Request body exceeds the limit of 1000 bytes (API_MAX_BODY_BYTES)."


@pytest.mark.parametrize(
    ("path", "status", "answer"),
    [
        # Label Studio's ML backends (label-studio-ml-backend's error shape), routed or not.
        ("/ml/mlb-0123456789ab/predict", 413, {"status": 413, "detail": MESSAGE}),
        ("/ml/no/such/route", 413, {"status": 413, "detail": MESSAGE}),
        # The Morpheo orchestrator's `{"Error": ...}`.
        ("/orchestrator/learnuplet", 413, {"Error": MESSAGE}),
        # The Hanami gateway: a 400, as its views answer a value over a limit (the SDK reads a
        # status other than 400, 401, 404, 409 and 500 as no answer at all).
        ("/control/v1/dataset/all", 400, {"error": MESSAGE}),
        # Anything else.
        ("/nowhere", 413, {"error": MESSAGE}),
    ],
)
def test_each_protocol_surface_refuses_a_big_body_in_its_own_format(settings, path, status, answer):
    """Byte for byte, from Content-Length, before any view runs (Django's layer here; the ASGI
    layer shares `too_large_body`)."""
    from django.test import Client

    settings.API_MAX_BODY_BYTES = 1000
    response = Client().generic("POST", path, "x" * 2000, content_type="application/json")
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.content == json.dumps(answer).encode()


@pytest.mark.parametrize("path", ["/check", "/send_ckpt"])
def test_labelprop_routes_answer_413_as_plain_text(settings, path):
    """napari-labelprop reads short texts: its routes' early 413 is the message itself."""
    from django.test import Client

    settings.API_MAX_BODY_BYTES = 1000
    response = Client().generic("POST", path, "x" * 2000, content_type="application/json")
    assert response.status_code == 413
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == MESSAGE.encode()
