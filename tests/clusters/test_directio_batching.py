"""Direct io over several sockets at once: request messages to one cluster that arrive while a
forward pass runs are stacked into one forward pass (off the event loop), and every message still
gets its own answer, in order per socket; an error answers only the message it comes from.

Passes of big models run in a thread (forced here with INLINE_MAX_PARAMETERS=0), and the batching
is forced, not timed: the first pass waits in its thread until the other sockets' messages are
queued behind it. Small models run their passes on the loop: there only the answers are checked."""

import asyncio
import threading
import time

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.accounts.services import token_pair_for
from apps.clusters import directio
from apps.core.exceptions import ValidationFailed
from tests.clusters.helpers import make_cluster
from tests.conftest import client_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

SOCKETS = 4
BAD = 7.0  # a first value the patched model refuses


@pytest.fixture
def direct_cluster(world):
    cluster = make_cluster(world.project, world.member)
    url = f"/api/projects/{world.project.pk}/clusters/{cluster.pk}/mode"
    r = client_for(world.member).put(url, {"mode": "DIRECT"}, format="json")
    assert r.status_code == 200
    return cluster


async def _sockets(world, cluster, n):
    from config.asgi import application

    token = await sync_to_async(lambda: token_pair_for(user=world.member)["access"])()
    path = f"/ws/projects/{world.project.pk}/clusters/{cluster.pk}/io?token={token}"
    sockets = []
    for _ in range(n):
        comm = WebsocketCommunicator(application, path)
        connected, _ = await comm.connect(timeout=10)
        assert connected
        assert (await comm.receive_json_from(timeout=10))["type"] == "ready"
        sockets.append(comm)
    return sockets


def _pending(runtime) -> int:
    return sum(len(b.pending) for b in list(runtime._batchers.values()))


def _gate_first_forward(runtime, monkeypatch, total: int):
    """Record each forward pass's message counts; the first one waits until `total` messages are
    in it or queued behind it in the runtime's batcher (those must share the next pass)."""
    calls: list[int] = []
    real = runtime.forward
    started = threading.Event()

    def forward(messages):
        if not calls:
            started.set()
            deadline = time.monotonic() + 30
            while len(messages) + _pending(runtime) < total:
                assert time.monotonic() < deadline, "the other messages never arrived"
                threading.Event().wait(0.001)
        calls.append(len(messages))
        return real(messages)

    monkeypatch.setattr(runtime, "forward", forward)
    return calls, started


def _refuse_marked_inputs(runtime, monkeypatch):
    """The model raises for any batch holding a sample whose first value is BAD."""
    real = runtime.model.forward

    def forward(x):
        if bool((x[:, 0] == BAD).any()):
            raise ValidationFailed("The model cannot take this sample.")
        return real(x)

    monkeypatch.setattr(runtime.model, "forward", forward)


def _frames(seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((1 + i % 3, 64), dtype=np.float32) for i in range(count)]


@pytest.mark.parametrize("threaded", [True, False])
async def test_concurrent_sockets_share_forward_passes_and_get_their_own_answers(
    world, direct_cluster, monkeypatch, threaded
):
    if threaded:
        monkeypatch.setattr(directio, "INLINE_MAX_PARAMETERS", 0)
    sockets = await _sockets(world, direct_cluster, SOCKETS)
    runtime = directio.runtime_get(str(direct_cluster.pk))
    frames = {i: _frames(i, 3) for i in range(SOCKETS)}
    expected = {
        i: [runtime.request({"pixels": x})["digit"] for x in xs] for i, xs in frames.items()
    }
    if threaded:
        calls, _ = _gate_first_forward(runtime, monkeypatch, total=SOCKETS)
    else:
        calls = []
        real = runtime.forward
        monkeypatch.setattr(runtime, "forward", lambda m: calls.append(len(m)) or real(m))

    async def talk(i: int, comm) -> list[np.ndarray]:
        for x in frames[i]:  # all at once: a socket's answers must come back in its order
            await comm.send_to(bytes_data=b"R" + x.astype("<f4").tobytes())
        answers = []
        for x in frames[i]:
            raw = await comm.receive_from(timeout=30)
            answers.append(np.frombuffer(raw, dtype="<f4").reshape(len(x), 10))
        return answers

    got = await asyncio.gather(*(talk(i, comm) for i, comm in enumerate(sockets)))
    for i, answers in enumerate(got):
        for answer, want in zip(answers, expected[i], strict=True):
            np.testing.assert_allclose(answer, want, rtol=1e-5, atol=1e-6)
    # Threaded: the first message of every socket went through at most two passes (the first
    # one, and one shared by the messages that came while it ran).
    assert sum(calls) == SOCKETS * 3, calls  # no message was served twice
    if threaded:
        assert calls[0] == SOCKETS or calls[1] == SOCKETS - calls[0], calls
        assert len(calls) < SOCKETS * 3
    for comm in sockets:
        await comm.disconnect()


@pytest.mark.parametrize("threaded", [True, False])
async def test_an_error_answers_only_the_message_it_comes_from(
    world, direct_cluster, monkeypatch, threaded
):
    if threaded:
        monkeypatch.setattr(directio, "INLINE_MAX_PARAMETERS", 0)
    sockets = await _sockets(world, direct_cluster, SOCKETS)
    runtime = directio.runtime_get(str(direct_cluster.pk))
    frames = [x for (x,) in (_frames(10 + i, 1) for i in range(SOCKETS))]
    frames[2][0, 0] = BAD
    expected = [runtime.request({"pixels": x})["digit"] for x in frames[:2] + frames[3:]]
    if threaded:
        calls, started = _gate_first_forward(runtime, monkeypatch, total=SOCKETS)
    _refuse_marked_inputs(runtime, monkeypatch)

    async def ask(comm, x):
        await comm.send_json_to({"type": "request", "inputs": {"pixels": x.tolist()}, "id": 1})
        return await comm.receive_json_from(timeout=30)

    if threaded:
        first = asyncio.ensure_future(ask(sockets[0], frames[0]))
        assert await asyncio.to_thread(started.wait, 30)  # the bad sample joins the shared pass
        pairs = zip(sockets[1:], frames[1:], strict=True)
        rest = await asyncio.gather(*(ask(c, x) for c, x in pairs))
        answers = [await first, *rest]
        assert calls[:2] == [1, SOCKETS - 1], calls  # the shared pass failed, then one by one
    else:
        pairs = zip(sockets, frames, strict=True)
        answers = await asyncio.gather(*(ask(c, x) for c, x in pairs))
    assert answers[2]["type"] == "error", answers[2]
    assert answers[2]["error"]["message"] == "The model cannot take this sample."
    good = answers[:2] + answers[3:]
    for answer, want in zip(good, expected, strict=True):
        assert answer["type"] == "output", answer
        np.testing.assert_allclose(answer["outputs"]["digit"], want, rtol=1e-5, atol=1e-6)
    # The socket that sent the bad sample stays open and is answered again.
    assert (await ask(sockets[2], frames[0]))["type"] == "output"
    for comm in sockets:
        await comm.disconnect()
