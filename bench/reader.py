"""A consumer that reads topics from their start in the background: the base of the benchmarks' result readers
(bench/loadgen.py OutputReader, bench/pipeline.py Collector), which only say what to keep."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


class TopicReader:
    """Reads every partition of `topics` from offset 0 until stopped; `on_records` gets each fetched batch."""

    def __init__(self, bootstrap: str, topics: Sequence[str], partitions: int, fetch_max_wait_ms: int = 20) -> None:
        self.topics, self.partitions = list(topics), partitions
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_max_wait_ms,  # tansu waits out the full fetch wait (brokers.md)
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        tps = [TopicPartition(t, p) for t in self.topics for p in range(self.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.consumer.stop()

    def check(self) -> None:
        """Raise the reader's own error, if its loop died."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()

    async def _loop(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            now = time.time()  # one read time per fetch: nothing is parsed while a step runs
            for tp, records in batch.items():
                self.on_records(tp.topic, records, now)
            if batch:
                self.on_fetched()

    def on_records(self, topic: str, records: list[ConsumerRecord], read_at: float) -> None:
        raise NotImplementedError

    def on_fetched(self) -> None:
        """Called after each non-empty fetch."""
