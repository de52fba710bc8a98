"""The facts reader's loop against a scripted consumer: loaded at the start's end offsets, live after, bad
records counted and never fatal. (Against a real broker: tests/e2e/test_facts_e2e.py.)"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from aiokafka import TopicPartition

from pipeline import metrics
from pipeline.config import load_settings
from pipeline.facts.reader import FactsReader

P0, P1 = TopicPartition("reference.facts", 0), TopicPartition("reference.facts", 1)


@dataclass
class Rec:
    key: bytes | None
    value: bytes | None
    offset: int


class ScriptedConsumer:
    """getmany hands out the fetches the test queues, one per call; positions follow what was handed out."""

    def __init__(self, ends: dict[TopicPartition, int]) -> None:
        self.ends = ends
        self.fetches: asyncio.Queue[dict[TopicPartition, list[Rec]]] = asyncio.Queue()
        self.asked = asyncio.Queue[None]()  # one item per getmany call: the previous fetch was applied
        self.positions = dict.fromkeys(ends, 0)

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Rec]]:
        self.asked.put_nowait(None)
        fetched = await self.fetches.get()
        for tp, recs in fetched.items():
            self.positions[tp] = recs[-1].offset + 1
        return fetched

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp] for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


async def applied(consumer: ScriptedConsumer, fetch: dict[TopicPartition, list[Rec]]) -> None:
    await consumer.fetches.put(fetch)
    await consumer.asked.get()  # the reader asked again: this fetch is applied


@pytest.fixture
def reader() -> FactsReader:
    return FactsReader(load_settings(facts={"enabled": True, "max_entries": 2}))


async def test_loaded_once_every_partition_reached_its_end_then_kept_current(reader: FactsReader) -> None:
    consumer = ScriptedConsumer({P0: 2, P1: 1})
    rejected_before = metrics.FACTS_REJECTED.labels("not_object")._value.get()  # noqa: SLF001
    evictions_before = metrics.FACTS_EVICTIONS._value.get()  # noqa: SLF001
    task = asyncio.ensure_future(reader.read(consumer))
    try:
        await consumer.asked.get()
        await applied(consumer, {P0: [Rec(b"c1", b'{"plan": "Business"}', 0), Rec(b"c2", b"[1]", 1)]})
        assert not reader.loaded  # partition 1 not read yet
        assert reader.table.get("c1") == {"plan": "Business"} and "c2" not in reader.table
        assert metrics.FACTS_REJECTED.labels("not_object")._value.get() == rejected_before + 1  # noqa: SLF001
        await applied(consumer, {P1: [Rec(b"c3", b'{"plan": "Free"}', 0)]})
        assert reader.loaded
        assert await reader.wait_loaded(0.001)
        assert metrics.FACTS_ENTRIES._value.get() == 2  # noqa: SLF001

        await applied(consumer, {P1: [Rec(b"c1", None, 1), Rec(b"c4", b'{"plan": "Pro"}', 2)]})
        assert "c1" not in reader.table and reader.table.get("c4") == {"plan": "Pro"}
        await applied(consumer, {P0: [Rec(b"c5", b"{}", 2)]})  # a third entity: the bound (2) drops c3
        assert "c3" not in reader.table and reader.table.evictions == 1
        assert metrics.FACTS_EVICTIONS._value.get() == evictions_before + 1  # noqa: SLF001
        assert reader.join.facts_of([]) == []
    finally:
        task.cancel()


async def test_an_empty_topic_is_loaded_at_once(reader: FactsReader) -> None:
    consumer = ScriptedConsumer({P0: 0, P1: 0})
    task = asyncio.ensure_future(reader.read(consumer))
    try:
        await consumer.asked.get()
        await applied(consumer, {})
        assert reader.loaded and len(reader.table) == 0
    finally:
        task.cancel()


async def test_wait_loaded_gives_up_after_its_timeout(reader: FactsReader) -> None:
    assert await reader.wait_loaded(0.01) is False
