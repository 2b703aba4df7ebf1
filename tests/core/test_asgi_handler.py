"""The middleware chain and the view of a request through the ASGI application daphne serves
(`config.asgi.application`) run in one trip to the request's thread, not one per middleware hook
(Django's async chain with synchronous middleware made about 17), and still do all they did:
headers set by middleware, the API's error envelope. Request threads, with their database
connections, are kept between requests."""

import json
import threading
import uuid

import pytest
from asgiref.sync import SyncToAsync
from django.urls import path

from config.urls import urlpatterns as site_urls
from tests.asgi import exchange, http_scope

pytestmark = pytest.mark.django_db(transaction=True)


async def _call(scope) -> tuple[dict, bytes]:
    sent = await exchange(scope, [{"type": "http.request", "body": b"", "more_body": False}])
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


_marks = threading.local()


def _where(request):
    """A view that answers which thread it ran on (a mark no other thread has, not an ident,
    which a new thread may reuse) and its database connection."""
    from django.db import connection
    from django.http import JsonResponse

    if not hasattr(_marks, "thread"):
        _marks.thread = uuid.uuid4().hex
    connection.ensure_connection()
    return JsonResponse({"thread": _marks.thread, "connection": id(connection.connection)})


urlpatterns = [*site_urls, path("where", _where)]


@pytest.mark.asyncio
async def test_request_threads_and_their_connections_are_kept(settings):
    """Django started a thread per request (and asgiref one more to join it), so every request
    also opened a database connection (on SQLite its first statement parses the whole schema).
    Requests one after another now run on one kept thread, with one connection."""
    settings.ROOT_URLCONF = __name__
    seen = [json.loads((await _call(http_scope("GET", "/where")))[1]) for _ in range(3)]
    assert len({s["thread"] for s in seen}) == 1, seen
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        assert len({s["connection"] for s in seen}) == 1, seen


def test_a_thread_still_running_a_view_is_not_handed_out_again():
    """A client that goes away leaves its view running on the request's thread: that thread is
    not kept for the next request (which would wait behind it), and ends when the view returns.
    At most `keep` idle threads are kept."""
    import threading

    from apps.core.asgi import RequestThreads

    threads = RequestThreads(keep=2)
    busy = threads.take()
    release = threading.Event()
    running = busy.submit(release.wait, 30)
    threads.give_back(busy)
    assert len(threads) == 0 and threads.take() is not busy
    release.set()
    assert running.result(timeout=30) is True

    taken = [threads.take() for _ in range(3)]
    for thread in taken:
        threads.give_back(thread)
    assert len(threads) == 2
    assert threads.take() in taken
