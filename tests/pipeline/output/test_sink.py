"""pipeline/output/sink.py: ProducerSink.send_many over a fake aiokafka producer (real record batches).

One record batch per partition in flight: the next one fills meanwhile and goes once the broker has the
previous one; every record's awaitable resolves with its batch; a failed batch fails its records."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from pipeline.output.outbox import Outgoing
from pipeline.output.partitioner import DefaultPartitioner
from pipeline.output.sink import HandOffBroken, ProducerSink

WAIT_S = 2.0


@dataclass
class SentBatch:
    topic: str
    partition: int
    builder: BatchBuilder
    future: asyncio.Future[Any]

    def values(self) -> list[bytes]:
        return [r.value for r in DefaultRecordBatch(bytes(self.builder._build()))]  # noqa: SLF001  the batch's bytes


class FakeProducer:
    def __init__(self, partitions: int = 2, batch_size: int = 16384) -> None:
        self.partitions, self.batch_size = partitions, batch_size
        self.sent: list[SentBatch] = []

    def _ensure_producer(self) -> FakeProducer:  # what aiokafka_producer() asks Faust's producer for
        return self

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0, is_transactional=False)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        assert builder.closed() if hasattr(builder, "closed") else True
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append(SentBatch(topic, partition, builder, fut))
        return fut


@dataclass
class FakeApp:
    producer: FakeProducer


def records(keys: list[bytes], topic: str = "out") -> list[Outgoing]:
    return [Outgoing(topic, k, b"value-" + k) for k in keys]


def partition_of(key: bytes, n: int = 2) -> int:
    return DefaultPartitioner()(key, list(range(n)), list(range(n)))


async def until(cond: Any) -> None:
    async with asyncio.timeout(WAIT_S):
        while not cond():
            await asyncio.sleep(0)


async def test_one_batch_per_partition_and_each_record_resolves_with_its_batch() -> None:
    producer = FakeProducer()
    sink = ProducerSink(FakeApp(producer))  # type: ignore[arg-type]
    keys = [f"evt-{i}".encode() for i in range(20)]
    handed = await sink.send_many(records(keys))
    await until(lambda: len(producer.sent) == len({partition_of(k) for k in keys}))
    by_partition = {b.partition: b for b in producer.sent}
    for p, batch in by_partition.items():  # in order, each record in its key's partition
        assert batch.values() == [b"value-" + k for k in keys if partition_of(k) == p]
    assert not any(h.done() for h in handed)  # type: ignore[attr-defined]
    first = producer.sent[0]
    first.future.set_result(None)
    await until(lambda: all(h.done() for h, k in zip(handed, keys, strict=True) if partition_of(k) == first.partition))
    assert not any(h.done() for h, k in zip(handed, keys, strict=True) if partition_of(k) != first.partition)


async def test_the_next_batch_fills_while_the_last_one_travels() -> None:
    producer = FakeProducer(partitions=1)
    sink = ProducerSink(FakeApp(producer))  # type: ignore[arg-type]
    await sink.send_many(records([b"a"]))
    await until(lambda: len(producer.sent) == 1)
    second = await sink.send_many(records([b"b"]))
    third = await sink.send_many(records([b"c", b"d"]))
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(producer.sent) == 1  # one batch per partition in flight
    producer.sent[0].future.set_result(None)
    await until(lambda: len(producer.sent) == 2)
    assert producer.sent[1].values() == [b"value-b", b"value-c", b"value-d"]  # one batch for both calls
    producer.sent[1].future.set_result(None)
    await asyncio.wait_for(asyncio.gather(*second, *third), WAIT_S)


async def test_a_full_batch_is_handed_over_at_once() -> None:
    producer = FakeProducer(partitions=1, batch_size=200)
    sink = ProducerSink(FakeApp(producer))  # type: ignore[arg-type]
    handed = await sink.send_many([Outgoing("out", b"k", b"x" * 120) for _ in range(3)])
    await until(lambda: len(producer.sent) >= 2)
    assert [len(b.values()) for b in producer.sent] == [1, 1]  # the third waits for the first's ack
    for b in producer.sent:
        b.future.set_result(None)
    await until(lambda: len(producer.sent) == 3)
    producer.sent[2].future.set_result(None)
    await asyncio.wait_for(asyncio.gather(*handed), WAIT_S)


async def test_a_refused_batch_fails_its_records() -> None:
    producer = FakeProducer(partitions=1)
    sink = ProducerSink(FakeApp(producer))  # type: ignore[arg-type]
    handed = await sink.send_many(records([b"a", b"b"]))
    await until(lambda: len(producer.sent) == 1)
    producer.sent[0].future.set_exception(RuntimeError("broker said no"))
    for h in handed:
        with pytest.raises(RuntimeError, match="broker said no"):
            await asyncio.wait_for(h, WAIT_S)


async def test_a_record_that_cannot_be_appended_is_not_retriable() -> None:
    sink = ProducerSink(FakeApp(FakeProducer()))  # type: ignore[arg-type]
    with pytest.raises(HandOffBroken) as info:
        await sink.send_many([Outgoing("out", b"k", "not bytes")])  # type: ignore[arg-type]
    assert info.value.retriable is False
