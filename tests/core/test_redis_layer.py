"""Team mode's Redis clients outlive the channel layer's blocking reads.

redis-py 8 defaults to a 5 s socket timeout, the length of channels-redis's blocking read
(BZPOPMIN with a 5 s timeout), so every idle websocket died with 1011 "Timeout reading" after about
5 s. Runs where the suite uses the Redis channel layer (CI); skipped elsewhere.
"""

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

pytestmark = pytest.mark.services


def _redis_layer():
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if backend != "channels_redis.core.RedisChannelLayer":
        pytest.skip("needs the Redis channel layer (CHANNEL_LAYER=redis, REDIS_URL)")
    return get_channel_layer()


def test_redis_clients_get_explicit_timeouts():
    host = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0] if _redis_layer() else None
    assert host["socket_timeout"] > 5  # longer than the layer's blocking read
    assert host["health_check_interval"] > 0 and host["socket_keepalive"] is True


@pytest.mark.asyncio
async def test_an_idle_receive_outlives_several_blocking_reads():
    """An idle consumer's receive loop survives its blocking reads timing out (8 s > 5 s read)."""
    layer = _redis_layer()
    channel = await layer.new_channel()
    with pytest.raises(TimeoutError):  # asyncio's own deadline, not redis' "Timeout reading"
        await asyncio.wait_for(layer.receive(channel), timeout=8)
    await layer.send(channel, {"type": "still.alive"})
    assert (await asyncio.wait_for(layer.receive(channel), timeout=5))["type"] == "still.alive"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_health_answers_while_a_socket_waits_on_the_layer():
    """An open socket's consumer holds channels-redis's receive loop of this process while it
    waits; the health check's round trip used a channel of another prefix, which nothing read
    while that socket stayed idle: GET /api/system/health never answered in team mode."""
    from channels.testing import HttpCommunicator

    from config.asgi import application

    layer = _redis_layer()
    waiting = asyncio.ensure_future(layer.receive(await layer.new_channel()))  # an idle socket
    try:
        await asyncio.sleep(0)  # let it take the receive loop
        communicator = HttpCommunicator(
            application, "GET", "/api/system/health", headers=[(b"host", b"testserver")]
        )
        response = await communicator.get_response(timeout=20)
        assert response["status"] == 200, response["body"][:300]
    finally:
        waiting.cancel()
