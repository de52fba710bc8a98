"""Read back the latest records of the stats topic at start: the merged windows and spike baselines a worker
rebuilds from Kafka instead of keeping them in process memory (pipeline/analytics/merge.py, alerts.py)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config import Settings
from pipeline.kafka_client import bootstrap_servers, client_security_kwargs

log = structlog.get_logger(__name__)

IDLE_POLL_MS = 300  # an empty poll past the end offsets ends the read (tansu under-reports them: brokers.md)


def records_per_partition(settings: Settings) -> int:
    """Enough of each partition's tail for the baseline and for the windows that may still get partials."""
    windows_waiting = int(settings.summaries.stats_wait_s / settings.summaries.window_s) + 2
    return max(settings.alerts.baseline_windows, windows_waiting) * 2 + 10


async def read_stats_tail(
    settings: Settings, topic: str, per_partition: int, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """The last `per_partition` records of each partition of `topic` (JSON objects; anything else skipped)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings.broker),
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        **client_security_kwargs(settings),
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return out
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(ends[tp] - per_partition, begins[tp]))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=IDLE_POLL_MS)
            for records in batch.values():
                for r in records:
                    try:
                        doc = orjson.loads(r.value) if r.value is not None else None
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(doc, dict):
                        out.append(doc)
            if not batch and await _at_end(consumer, ends):
                break
    finally:
        await consumer.stop()
    log.info("stats_tail_read", topic=topic, records=len(out))
    return out


async def _at_end(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True
