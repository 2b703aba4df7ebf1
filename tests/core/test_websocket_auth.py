"""Websocket tenancy: JWT from the query string, Bearer header or subprotocol; origin checks; the
scoped consumer base refuses anonymous, foreign and missing projects before accepting."""

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.urls import path

from apps.accounts.services import token_pair_for
from apps.accounts.ws import JWTAuthMiddleware, OriginCheckMiddleware
from apps.core.consumers import ProjectScopedConsumer

pytestmark = pytest.mark.django_db(transaction=True)


class EchoProjectConsumer(ProjectScopedConsumer):
    def authorize(self, access):
        self.project_id = access.project.pk

    async def on_open(self):
        await self.send_json({"project": self.project_id})


APP = OriginCheckMiddleware(
    JWTAuthMiddleware(
        URLRouter([path("ws/projects/<project_id>/echo", EchoProjectConsumer.as_asgi())])
    )
)


async def _connect(path, headers=(), subprotocols=None):
    communicator = WebsocketCommunicator(
        APP, path, headers=list(headers), subprotocols=subprotocols
    )
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


def _token(user):
    return token_pair_for(user=user)["access"]


@pytest.mark.asyncio
async def test_member_connects_with_query_token(world):
    token = await _sync(_token, world.member)
    comm, connected, _ = await _connect(f"/ws/projects/{world.project.pk}/echo?token={token}")
    assert connected
    assert await comm.receive_json_from() == {"project": world.project.pk}
    await comm.disconnect()


@pytest.mark.asyncio
async def test_header_and_subprotocol_tokens(world):
    token = await _sync(_token, world.member)
    comm, connected, _ = await _connect(
        f"/ws/projects/{world.project.pk}/echo",
        headers=[(b"authorization", f"Bearer {token}".encode())],
    )
    assert connected
    await comm.disconnect()
    # The raw X-Auth-Token header is the Hanami gateway's (REST only), not the websockets'.
    _, connected, code = await _connect(
        f"/ws/projects/{world.project.pk}/echo", headers=[(b"x-auth-token", token.encode())]
    )
    assert (connected, code) == (False, 4401)
    comm, connected, _ = await _connect(
        f"/ws/projects/{world.project.pk}/echo", subprotocols=[f"bearer.{token}"]
    )
    assert connected
    await comm.disconnect()


@pytest.mark.asyncio
async def test_refused_without_token_with_bad_token_and_for_foreign_projects(world):
    _, connected, code = await _connect(f"/ws/projects/{world.project.pk}/echo")
    assert (connected, code) == (False, 4401)
    _, connected, code = await _connect(f"/ws/projects/{world.project.pk}/echo?token=forged")
    assert (connected, code) == (False, 4401)
    outsider = await _sync(_token, world.outsider)
    _, connected, code = await _connect(f"/ws/projects/{world.project.pk}/echo?token={outsider}")
    assert (connected, code) == (False, 4404)
    _, connected, code = await _connect(f"/ws/projects/proj-nothere/echo?token={outsider}")
    assert (connected, code) == (False, 4404)


@pytest.mark.asyncio
async def test_browser_origins_must_be_allowed(world, settings):
    token = await _sync(_token, world.member)
    url = f"/ws/projects/{world.project.pk}/echo?token={token}"
    _, connected, code = await _connect(url, headers=[(b"origin", b"https://evil.example")])
    assert (connected, code) == (False, 4403)
    comm, connected, _ = await _connect(url, headers=[(b"origin", b"http://localhost:8000")])
    assert connected
    await comm.disconnect()
    settings.WEBSOCKET_ALLOWED_ORIGINS = ["https://studio.example"]
    comm, connected, _ = await _connect(url, headers=[(b"origin", b"https://studio.example")])
    assert connected
    await comm.disconnect()


async def _sync(fn, *args):
    from channels.db import database_sync_to_async

    return await database_sync_to_async(fn)(*args)
