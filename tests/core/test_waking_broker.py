"""The Redis broker's idle consumers wake when a message is sent instead of sleeping out their
backoff (Dramatiq's consumer polls: an idle worker started tasks up to its timeout late)."""

import threading

import pytest
from django.conf import settings

from apps.core.broker import WakingRedisBroker


@pytest.fixture
def broker():
    import redis
    from dramatiq.middleware import default_middleware

    url = getattr(settings, "REDIS_URL", "") or "redis://127.0.0.1:6379/0"
    url = url.rsplit("/", 1)[0] + "/15"  # a database of its own, flushed
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        pytest.skip(f"Redis unreachable: {exc}")
    broker = WakingRedisBroker(url=url, namespace="orchard-test-wake", middleware=[])
    for m in default_middleware:
        broker.add_middleware(m())
    broker.client.flushdb()
    broker.declare_queue("q")
    yield broker
    broker.client.flushdb()
    broker.close()


def test_an_idle_consumer_wakes_on_enqueue_not_after_its_backoff(broker):
    from dramatiq.message import Message

    consumer = broker.consume("q", prefetch=1, timeout=60_000)
    consumer.misses = 30  # long idle: Dramatiq's own consumer would now sleep up to 60 s
    got: list = []
    waiting = threading.Event()

    def take():
        waiting.set()
        while not got:
            message = next(consumer)
            if message is not None:
                got.append(message)

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    waiting.wait(5)
    sent = broker.enqueue(Message(queue_name="q", actor_name="a", args=(1,), kwargs={}, options={}))
    taker.join(20)  # far below the 60 s backoff: only a wake-up gets here in time
    assert got and got[0].message_id == sent.message_id
    consumer.ack(got[0])
    consumer.close()


def test_tokens_are_capped(broker):
    from dramatiq.message import Message

    for i in range(100):
        broker.enqueue(Message(queue_name="q", actor_name="a", args=(i,), kwargs={}, options={}))
    assert broker.client.llen(broker.wake_key("q")) <= 16


def test_a_busy_consumer_fetches_when_its_message_is_acked_not_after_its_backoff(broker):
    """A worker with one slot took its next message only after sleeping out its backoff (up to
    the timeout) once its task ended; now the ack wakes it."""
    from dramatiq.message import Message

    def send(i):
        return broker.enqueue(
            Message(queue_name="q", actor_name="a", args=(i,), kwargs={}, options={})
        )

    consumer = broker.consume("q", prefetch=1, timeout=60_000)
    first = send(1)
    running = next(consumer)
    while running is None:
        running = next(consumer)
    assert running.message_id == first.message_id
    second = send(2)
    consumer.misses = 30  # a long task: Dramatiq's busy consumer would now sleep up to 60 s
    got: list = []
    asked = threading.Event()

    def take():
        asked.set()
        message = next(consumer)  # busy (one outstanding of one): waits for a free slot
        got.append(message)

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    asked.wait(5)
    consumer.ack(running)  # the worker thread is done with the first message
    taker.join(20)  # far below the 60 s backoff: only the ack's wake-up gets here in time
    assert got and got[0] is not None and got[0].message_id == second.message_id
    consumer.ack(got[0])
    consumer.close()
