"""Where records are handed to Kafka: the `Sink` protocol the outbox writes through; Faust's producer as one
(`FaustSink`), and the aiokafka producer inside it as another (`ProducerSink`, the classify path's).

A sink only hands a record over; retrying, waiting for the broker's ack and acking inputs are the outbox's job
(pipeline/output/outbox.py).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, cast

import faust

from pipeline.kafka_transport import aiokafka_producer

Headers = list[tuple[str, bytes | None]]


class Sink(Protocol):
    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> Awaitable[Any]:
        """Hand a record to the producer; the returned awaitable resolves once the broker has it.

        Raises when the producer cannot take the record now (an exception whose `retriable` is False, or whose
        cause's is, will never succeed); the awaitable fails when the broker refuses the record."""
        ...


class FaustSink:
    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> Awaitable[Any]:
        # The producer directly, not Topic.send: no codec work, and we get the broker-ack future back. Faust's
        # annotation omits None header values, which Kafka and aiokafka allow (a header copied from the input).
        return await self.app.producer.send(topic, key, value, None, None, cast("list[tuple[str, bytes]]", headers))


class ProducerSink:
    """The aiokafka producer Faust started, used directly: one call per record instead of Faust's wrapper and
    its per-record signal (the same producer, so Faust still flushes it on stop)."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> Awaitable[Any]:
        producer = aiokafka_producer(self.app.producer)
        delivered: Awaitable[Any] = await producer.send(topic, value, key=key, headers=headers)
        return delivered
