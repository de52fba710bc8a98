"""Every worker's copy of the reference topic: read whole at start, then kept current (a `mode.Service`).

    reference.facts (compacted) ─every partition, from the start→ FactsTable ─lookups→ FactsJoin (the scheduler)

Not a consumer group: each worker needs the whole table, not a share of it. The consumer has no group id, so
aiokafka assigns it every partition of the topic (new ones too) and, with no committed offsets, starts each
at its beginning: a restart rebuilds the table from the topic, nothing is committed anywhere.

Guarantees
- Loaded before classifying: `wait_loaded(timeout)` returns once every partition was read up to the end offset
  it had when the reader started (the runtime waits for it, at most `facts.load_timeout_s`, before it reports
  ready). Past the timeout the worker starts anyway with what it has, and says so: facts enrich events, they
  must not stop them. (On tansu, whose end offsets can be low, a last record batch larger than MAX_RECORDS is
  applied a fetch after `loaded`: its rest is already buffered, so microseconds later.)
- Live: records published later reach the table within a fetch (`fetch_max_wait_ms`), in every worker.
- Never fatal: a bad record is rejected by the table (counted by reason, logged once per fetch with its
  entity ids, never its value); a failing broker call is logged and retried after RETRY_S.
- Bounded: the table holds at most `facts.max_entries` entities (pipeline/facts/table.py).

Bad facts are not sent to the DLQ: they stay in the compacted topic until their entity is published again,
so every worker would dead-letter each one again at every start. A metric and a log line per fetch say it
instead (`slmstream_facts_rejected{reason}`, `facts_rejected`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import mode
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import metrics
from pipeline.config import Settings
from pipeline.facts.join import FactsJoin
from pipeline.facts.table import FactsTable
from pipeline.kafka_client import bootstrap_servers, client_security_kwargs, ensure_topics

log = structlog.get_logger(__name__)

POLL_MS = 200  # longest a fetch waits when nothing arrives (then the stop flag is checked)
RETRY_S = 2.0  # after a failed broker call
MAX_RECORDS = 2000  # per fetch: the table applies them on the event loop, a fetch at a time
COMPACTED = {"cleanup.policy": "compact"}
REJECTED_SHOWN = 5  # entity ids named in one facts_rejected line


def new_facts_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        settings.facts.topic,
        bootstrap_servers=bootstrap_servers(settings.broker),
        client_id=f"{settings.app_id}-facts",
        group_id=None,  # every partition, no commits: each worker reads the whole topic
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        **client_security_kwargs(settings),
    )


async def ensure_facts_topic(settings: Settings) -> None:
    """Create the reference topic, compacted, unless it exists (a topic someone created keeps its settings)."""
    await ensure_topics(
        bootstrap_servers(settings.broker),
        [settings.facts.topic],
        settings.topics.partitions,
        settings.topics.replicas,
        configs=COMPACTED,
        **client_security_kwargs(settings),
    )


class FactsReader(mode.Service):
    def __init__(self, settings: Settings, table: FactsTable | None = None) -> None:
        super().__init__()
        f = settings.facts
        self.settings = settings
        self.table = table if table is not None else FactsTable(f.max_entries, f.max_value_bytes)
        self.join = FactsJoin(self.table, f.join_field, metrics.observe_facts_lookups)
        self._loaded: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reported_evictions = 0
        self._reported_rejected: Counter[str] = Counter()

    def _loaded_event(self) -> asyncio.Event:
        if self._loaded is None:
            self._loaded = asyncio.Event()
        return self._loaded

    @property
    def loaded(self) -> bool:
        return self._loaded is not None and self._loaded.is_set()

    async def wait_loaded(self, timeout: float) -> bool:
        """Wait until the topic was read to its end offsets at start, at most `timeout` s (False: not yet)."""
        try:
            await asyncio.wait_for(self._loaded_event().wait(), timeout)
        except TimeoutError:
            log.warning(
                "facts_not_loaded",
                topic=self.settings.facts.topic,
                timeout_s=timeout,
                entries=len(self.table),
                detail="classifying with the facts read so far; the rest joins as it arrives",
            )
            return False
        return True

    # ---- lifecycle ----------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # stopping: any failure was logged
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _run(self) -> None:
        while True:
            try:
                await ensure_facts_topic(self.settings)
                self._consumer = new_facts_consumer(self.settings)
                await self._consumer.start()
                await self.read(self._consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the table keeps what it has; reading starts over after a pause
                log.error("facts_reader_failed", error=repr(exc), retry_s=RETRY_S)
                if self._consumer is not None:
                    consumer, self._consumer = self._consumer, None
                    try:
                        await consumer.stop()
                    except Exception as stop_exc:
                        log.warning("facts_consumer_stop_failed", error=repr(stop_exc))
                await asyncio.sleep(RETRY_S)

    # ---- the loop -----------------------------------------------------------------------------------------
    async def read(self, consumer: Any) -> None:
        """Apply every record of the topic to the table, forever; `loaded` once the start's end offsets are
        reached. `consumer`: a started AIOKafkaConsumer subscribed to the topic (or a test's stand-in)."""
        t0 = time.monotonic()
        ends: dict[TopicPartition, int] | None = None
        applied = 0
        while True:
            fetched = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
            applied += self.apply_fetch(fetched)
            if self.loaded:
                continue
            assigned = consumer.assignment()
            if not assigned:
                continue  # metadata not there yet: no partition assigned
            if ends is None:
                ends = await consumer.end_offsets(list(assigned))
            if await self._reached(consumer, ends):
                self._loaded_event().set()
                log.info(
                    "facts_loaded",
                    topic=self.settings.facts.topic,
                    partitions=len(ends),
                    records=applied,
                    entries=len(self.table),
                    evictions=self.table.evictions,
                    rejected=sum(self.table.rejected.values()),
                    seconds=round(time.monotonic() - t0, 3),
                )

    @staticmethod
    async def _reached(consumer: Any, ends: dict[TopicPartition, int]) -> bool:
        """Every partition read up to `ends`. tansu may report an end offset below the true one (brokers.md):
        a fetch returns whole record batches, so a position past it means the last batch was read too."""
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return False
        return True

    def apply_fetch(self, fetched: dict[Any, list[Any]]) -> int:
        """Apply one fetch's records in order; report the table's size, evictions and rejects once."""
        n = 0
        rejected: list[str] = []
        for records in fetched.values():
            for r in records:
                result = self.table.apply(r.key, r.value)
                if result.outcome == "rejected" and len(rejected) < REJECTED_SHOWN:
                    rejected.append(f"{result.entity}: {result.reason}")
                n += 1
        if n:
            self._report(rejected)
        return n

    def _report(self, rejected: list[str]) -> None:
        table = self.table
        metrics.FACTS_ENTRIES.set(len(table))
        if table.evictions > self._reported_evictions:
            metrics.FACTS_EVICTIONS.inc(table.evictions - self._reported_evictions)
            self._reported_evictions = table.evictions
        if rejected:
            counts = {r: n - self._reported_rejected[r] for r, n in table.rejected.items()}
            for reason, n in counts.items():
                if n > 0:
                    metrics.FACTS_REJECTED.labels(reason).inc(n)
            self._reported_rejected = Counter(table.rejected)
            log.warning("facts_rejected", topic=self.settings.facts.topic, count=sum(counts.values()), first=rejected)
