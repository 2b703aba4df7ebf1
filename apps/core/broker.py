"""Dramatiq's Redis broker without its polling delay.

Dramatiq's Redis consumer finds a queue empty, sleeps a backoff that grows to the worker's
timeout (`orchard_worker --worker-timeout`, 100 ms), and fetches again: an idle worker starts a
new task tens of milliseconds after it was sent (a bare actor's p50 was 38 ms on this machine,
RabbitMQ's pushed consumer 7 ms). Here every enqueue also pushes a token on a small per-queue
wake-up list, and an idle consumer waits on that list with BLPOP for the same backoff instead of
sleeping: it fetches as soon as a message arrives, and polls no more often than before when none
does. The messages themselves, their acks, heartbeats and redelivery stay Dramatiq's.

A busy consumer (as many messages outstanding as it may prefetch) sleeps as Dramatiq's does, so
it does not take the tokens meant for idle ones. Tokens are capped (WAKE_TOKENS) and expire, so a
burst sent while every worker was busy costs at most a few extra fetches later.
"""

from __future__ import annotations

import time

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

WAKE_TOKENS = 16
WAKE_TTL_S = 60


class WakingRedisBroker(RedisBroker):
    @property
    def consumer_class(self):
        return _WakingConsumer

    def wake_key(self, queue_name: str) -> str:
        return f"{self.namespace}:{queue_name}.wake"

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        message = super().enqueue(message, delay=delay)
        if delay is None:  # a delayed message is not due yet: its delay queue polls for it
            key = self.wake_key(message.queue_name)
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, WAKE_TOKENS - 1)
            pipe.expire(key, WAKE_TTL_S)
            pipe.execute()
        return message


class _WakingConsumer(_RedisConsumer):
    def __next__(self):
        woken = False
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                idle = self.outstanding_message_count < self.prefetch
                if idle:
                    self.message_cache = self.broker.do_fetch(
                        self.queue_name, self.prefetch - self.outstanding_message_count
                    )
                    if self.message_cache:
                        continue
                self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                if idle and not woken:
                    key = self.broker.wake_key(self.queue_name)
                    if self.broker.client.blpop([key], timeout=backoff_ms / 1000):
                        self.misses, woken = 0, True  # something was sent: fetch once more
                        continue
                else:
                    time.sleep(backoff_ms / 1000)
                return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None
