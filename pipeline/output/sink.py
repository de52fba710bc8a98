"""Where records are handed to Kafka: the `Sink` protocol the outbox writes through; Faust's producer as one
(`FaustSink`), and the aiokafka producer inside it as another (`ProducerSink`, the classify path's).

A sink only hands a record over; retrying, waiting for the broker's ack and acking inputs are the outbox's job
(pipeline/output/outbox.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from functools import partial
from typing import Any, Protocol, cast

import faust

from pipeline.kafka_transport import aiokafka_producer
from pipeline.output.partitioner import DefaultPartitioner

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


class Record(Protocol):
    """What `send_many` reads of a record (the outbox's `Outgoing`)."""

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes: ...
    @property
    def headers(self) -> Headers | None: ...


class ProducerSink:
    """The aiokafka producer Faust started (so Faust still flushes and stops it), used directly.

    `send_many` is the classify path's way out: records are appended to a record batch per partition of our
    own (aiokafka's `create_batch`), one future per batch instead of one per record; while a partition's
    previous batch is on its way to the broker (`send_batch` waits for that), the next one fills, as aiokafka's
    own accumulator does for single records. Records keep Kafka's default partitioning (murmur2 of the key).
    `send` hands over one record the producer's usual way: what the outbox's retries use.
    """

    def __init__(self, app: faust.App, partitioner: Any = None) -> None:
        self.app = app
        self.partitioner = partitioner or DefaultPartitioner()
        self._partitions: dict[str, tuple[list[int], float]] = {}  # topic → (partitions, when looked up)
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._flushers: dict[tuple[str, int], asyncio.Future[None]] = {}

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> Awaitable[Any]:
        producer = aiokafka_producer(self.app.producer)
        delivered: Awaitable[Any] = await producer.send(topic, value, key=key, headers=headers)
        return delivered

    async def send_many(self, records: Sequence[Record]) -> list[Awaitable[Any]]:
        """Hand over `records`; one awaitable per record, resolved once the broker has its batch. All or
        nothing: what can fail (the topic's metadata) is looked up before any record is appended."""
        producer = aiokafka_producer(self.app.producer)
        now = time.monotonic()
        partitions: dict[str, list[int]] = {}
        for topic in {r.topic for r in records}:
            known = self._partitions.get(topic)
            if known is None or now - known[1] > PARTITIONS_TTL_S:
                known = (sorted(await producer.partitions_for(topic)), now)
                self._partitions[topic] = known
            partitions[topic] = known[0]
        choose, lanes = self.partitioner, self._lanes
        out: list[Awaitable[Any]] = []
        touched = set()
        try:
            for r in records:
                all_partitions = partitions[r.topic]
                tp = (r.topic, choose(r.key, all_partitions, all_partitions))
                lane = lanes.get(tp)
                if lane is None:
                    lane = lanes[tp] = _Lane()
                out.append(lane.append(producer, r))
                touched.add(tp)
        except Exception as exc:  # some records may be in a batch already: handing them over again would
            raise HandOffBroken(f"appending a record failed: {exc!r}") from exc  # duplicate them
        for tp in touched:
            if tp not in self._flushers:
                self._flushers[tp] = asyncio.ensure_future(self._flush(tp, lanes[tp]))
        return out

    async def _flush(self, tp: tuple[str, int], lane: _Lane) -> None:
        """Hand the partition's batches to the producer until none is left. A full batch goes at once (the
        producer queues one per partition); the one being filled waits until the previous batch is stored,
        filling meanwhile: one round trip's worth of records per batch, not a batch per call."""
        while True:
            last = lane.in_flight
            if not lane.full and lane.count and last is not None and not last.done():
                await asyncio.wait([last])
            taken = lane.take()
            if taken is None:
                del self._flushers[tp]  # no await since take(): a record appended later starts a new flusher
                return
            builder, delivered = taken
            try:
                sent = await aiokafka_producer(self.app.producer).send_batch(builder, tp[0], partition=tp[1])
            except Exception as exc:  # the outbox hands each of its records over again
                if not delivered.done():
                    delivered.set_exception(exc)
                continue
            sent.add_done_callback(partial(_settle, delivered))
            lane.in_flight = sent


class HandOffBroken(Exception):
    """A batch hand-off failed after some of its records were taken: not retriable (would duplicate them)."""

    retriable = False


PARTITIONS_TTL_S = 30.0  # a topic's partition count is looked up again this often (partitions can be added)


class _Lane:
    """One partition's batch being filled, and the full ones waiting to be handed to the producer."""

    __slots__ = ("builder", "delivered", "count", "full", "in_flight")

    def __init__(self) -> None:
        self.builder: Any = None
        self.delivered: Any = None  # the future of the batch being filled
        self.count = 0
        self.full: deque[tuple[Any, asyncio.Future[None]]] = deque()
        self.in_flight: asyncio.Future[Any] | None = None  # the last batch handed to the producer

    def append(self, producer: Any, r: Record) -> asyncio.Future[None]:
        if self.builder is None:
            self.builder, self.delivered = producer.create_batch(), asyncio.get_running_loop().create_future()
        if self.builder.append(timestamp=None, key=r.key, value=r.value, headers=r.headers or []) is None:
            # Full (a first record always fits, however large): queue it and start the next one.
            self.full.append((self.builder, self.delivered))
            self.builder, self.delivered = producer.create_batch(), asyncio.get_running_loop().create_future()
            self.builder.append(timestamp=None, key=r.key, value=r.value, headers=r.headers or [])
            self.count = 0
        self.count += 1
        delivered: asyncio.Future[None] = self.delivered
        return delivered

    def take(self) -> tuple[Any, asyncio.Future[None]] | None:
        """The next batch to hand over, closed (sent without lingering: it filled while the last one travelled)."""
        if self.full:
            builder, delivered = self.full.popleft()
        elif self.count:
            builder, delivered = self.builder, self.delivered
            self.builder, self.delivered, self.count = None, None, 0
        else:
            return None
        builder.close()
        return builder, delivered


def _settle(delivered: asyncio.Future[None], sent: asyncio.Future[Any]) -> None:
    if delivered.done():
        return
    if sent.cancelled():
        delivered.cancel()
    elif (exc := sent.exception()) is not None:
        delivered.set_exception(exc)
    else:
        delivered.set_result(None)
