"""Dramatiq's Redis broker without its polling delay.

Dramatiq's Redis consumer finds a queue empty, sleeps a backoff that grows to the worker's
timeout (`orchard_worker --worker-timeout`, 100 ms), and fetches again: an idle worker starts a
new task tens of milliseconds after it was sent (a bare actor's p50 was 38 ms on this machine,
RabbitMQ's pushed consumer 7 ms). Here every enqueue also pushes a token on a small per-queue
wake-up list, and an idle consumer waits on that list with BLPOP for the same backoff instead of
sleeping: it fetches as soon as a message arrives, and polls no more often than before when none
does. The messages themselves, their acks, heartbeats and redelivery stay Dramatiq's.

A busy consumer (as many messages outstanding as it may prefetch) does not take the tokens meant
for idle ones: it waits for the same backoff on an in-process event that its ack or nack sets, so
it fetches the next message as soon as a worker thread is done with one. (Dramatiq's consumer
slept out its backoff, up to the timeout: a worker with one slot idled up to 100 ms after every
task, which under load started tasks hundreds of ms later than RabbitMQ, whose broker pushes the
next message on the ack.) Tokens are capped (WAKE_TOKENS) and expire, so a burst sent while every
worker was busy costs at most a few extra fetches later.
"""

from __future__ import annotations

import threading

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
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._slot_freed = threading.Event()  # set by ack/nack (worker threads): fetch again

    def ack(self, message):
        try:
            super().ack(message)
        finally:
            self._slot_freed.set()

    def nack(self, message):
        try:
            super().nack(message)
        finally:
            self._slot_freed.set()

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
                elif not idle and self._slot_freed.wait(backoff_ms / 1000):
                    self._slot_freed.clear()  # a slot is free: fetch at once
                    self.misses = 0
                    continue
                return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None
