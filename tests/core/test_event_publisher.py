"""Events published from sync code (a worker) to a channel layer other than the in-memory one."""

import asyncio
import threading

from apps.core import events


class _LoopRecordingLayer:
    """A channel layer that is not the in-memory one (as Redis): records the loop of each send."""

    def __init__(self):
        self.loops = []

    async def group_send(self, group, message):
        self.loops.append(asyncio.get_running_loop())


def test_sync_publishes_to_a_remote_layer_share_one_event_loop(monkeypatch):
    """A worker published every event through `async_to_sync`: a new thread and event loop per
    event, and channels-redis opened a new Redis connection for each loop (2 ms of CPU per event).
    Sends from sync code now run on one kept loop, where the layer's connections stay open."""
    layer = _LoopRecordingLayer()
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    for i in range(3):
        events.publish("task.x", {"type": "progress", "i": i})
    assert len(layer.loops) == 3
    assert layer.loops[0] is layer.loops[1] is layer.loops[2]
    assert not layer.loops[0].is_closed()


class _HungLayer:
    """A remote layer that never answers (a Redis that stopped responding)."""

    def __init__(self):
        self.cancelled = threading.Event()

    async def group_send(self, group, message):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def test_a_publish_to_a_hung_layer_gives_up_and_logs(monkeypatch, caplog):
    """The kept-loop publish waited without a limit: a worker's task step blocked for as long as
    Redis did not answer. It now gives up after `_PUBLISH_TIMEOUT_S`, cancels the send and logs."""
    layer = _HungLayer()
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    monkeypatch.setattr(events, "_PUBLISH_TIMEOUT_S", 0.05)
    caller = threading.Thread(target=events.publish, args=("task.x", {"type": "progress"}))
    caller.start()
    caller.join(timeout=30)
    assert not caller.is_alive(), "publish is still waiting on the hung layer"
    assert layer.cancelled.wait(timeout=30)
    assert "could not publish to task.x" in caplog.text


def test_a_worker_thread_hands_events_to_a_busy_server_loop_without_waiting(monkeypatch, caplog):
    """Embedded mode: a worker thread publishes into the in-memory layer through the server's
    loop. It used to wait for the loop to run each send (two GIL hand-offs per event, and up to
    2 s then a 'could not publish' when the loop was busy); the sends now queue on the loop, in
    order, and the caller goes on."""
    from channels.layers import InMemoryChannelLayer

    layer = InMemoryChannelLayer()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    try:

        async def join():
            channel = await layer.new_channel()
            await layer.group_add("task.busy", channel)
            return channel

        channel = asyncio.run_coroutine_threadsafe(join(), loop).result(timeout=30)
        monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
        monkeypatch.setattr(events, "_server_loop", loop)
        busy, release = threading.Event(), threading.Event()
        loop.call_soon_threadsafe(lambda: (busy.set(), release.wait(timeout=30)))
        assert busy.wait(timeout=30)
        for i in range(5):  # the loop is blocked: nothing is delivered meanwhile
            events.publish("task.busy", {"type": "progress", "i": i})
        assert "could not publish" not in caplog.text
        release.set()

        async def drain():
            return [(await layer.receive(channel))["event"]["i"] for _ in range(5)]

        assert asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout=30) == [0, 1, 2, 3, 4]
    finally:
        release.set()
        loop.call_soon_threadsafe(loop.stop)
