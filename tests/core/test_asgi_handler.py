"""The middleware chain and the view of a request through the ASGI application daphne serves
(`config.asgi.application`) run in one trip to the request's thread, not one per middleware hook
(Django's async chain with synchronous middleware made about 17), and still do all they did:
headers set by middleware, the API's error envelope, streamed answers."""

import asyncio
import json

import pytest
from asgiref.sync import SyncToAsync

from tests.asgi import http_scope

pytestmark = pytest.mark.django_db(transaction=True)


async def _call(scope) -> tuple[dict, bytes]:
    from config.asgi import application

    sent = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(application(scope, receive, send), 30)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start, body


@pytest.fixture
def hops(monkeypatch) -> list:
    """The thread-sensitive sync_to_async calls made while the test runs."""
    made = []
    original = SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        if self._thread_sensitive:
            made.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    return made


def _headers(start: dict) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in start["headers"]}


@pytest.mark.asyncio
async def test_a_request_takes_one_trip_through_the_middleware_chain(world, hops):
    from channels.db import database_sync_to_async

    from apps.accounts.services import token_pair_for

    token = (await database_sync_to_async(token_pair_for)(user=world.owner))["access"]
    hops.clear()
    start, body = await _call(
        http_scope("GET", "/api/projects", [(b"authorization", f"Bearer {token}".encode())])
    )
    assert start["status"] == 200, body
    assert str(world.project.pk) in body.decode()
    # request_started's receivers, the chain with the view, the response's close.
    assert len(hops) <= 3, hops
    headers = _headers(start)  # set by SecurityMiddleware and XFrameOptionsMiddleware
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"x-content-type-options"] == b"nosniff"


@pytest.mark.asyncio
async def test_errors_keep_the_api_envelope(world, hops):
    start, body = await _call(http_scope("GET", f"/api/projects/{world.project.pk}/clusters"))
    assert start["status"] == 401
    assert json.loads(body)["error"]["code"] == "UNAUTHORIZED"
    assert len(hops) <= 4, hops  # and the log line of the 401, off the request's thread
