"""The analytics agents: events.enriched → events.enriched.by-key → windows → summaries, partials → merged stats
and spike alerts.

Registered (`register(app, runtime, topics)`) only when `summaries.enabled` or `alerts.enabled`. Three agents,
so that with several workers every key's windows and every window's stats are whole in one worker:

- `repartition`: each enriched record to `events.enriched.by-key`, keyed by its window key (`summaries.key`).
  The enriched record is acked once the broker holds the copy.
- `analyze`: by-key records into their windows (pipeline/analytics/runner.py). A record is acked only once the
  summary of its key's window and its partition's partial of the window are acknowledged by the broker, so a
  crash re-reads every record of every window not yet done.
- `merge_stats`: the per-partition partials of each window (all under one key, so one worker merges every
  window) into one stats record, and spikes on the merged counts against the windows before; a partial is
  acked once the stats record (and its alerts) are stored. When it gets that partition, the worker first
  reads back the latest stats records (the windows merged and the spike baseline, from Kafka).

Rebalances: partitions taken from this worker have their open windows dropped (their records are not acked:
the next owner reads them again); partitions given to it start their windows' partials.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from functools import partial
from typing import Any

import faust
import structlog
from faust import StreamT
from faust.types import TP

from pipeline.analytics.runner import BadRecord, parse_enriched
from pipeline.faust_app import WorkerTopics
from pipeline.kafka_transport import forget_unacked
from pipeline.output.outbox import Outbox, Outgoing
from pipeline.output.sink import FaustSink
from pipeline.runtime import Runtime

log = structlog.get_logger(__name__)

REPARTITION_IN_FLIGHT = 4096  # enriched records handed to the producer and not yet acked by the broker


async def repartition(stream: StreamT[Any], app: faust.App, runtime: Runtime, topic: str, key_spec: str) -> None:
    """Copy each enriched record to `topic`, keyed by its window key; ack it after the broker's ack."""
    assert isinstance(stream, faust.Stream)  # what Faust gives an agent; StreamT declares no noack()
    outbox = Outbox(FaustSink(app))
    room = asyncio.Semaphore(REPARTITION_IN_FLIGHT)
    async for event in stream.noack().events():
        await runtime.ready()  # the by-key topic is declared (with its partitions) before the first copy
        value = event.value
        try:
            key, _ = parse_enriched(value, key_spec)
        except BadRecord as exc:  # nothing a window could use: it stays in events.enriched
            log.warning("enriched_record_skipped", reason=str(exc))
            await stream.ack(event)
            continue
        await room.acquire()
        await outbox.send_batch([Outgoing(topic, key.encode(), value)], [partial(stream.ack, event)], then=room.release)
        outbox.raise_if_failed()


async def analyze(stream: StreamT[Any], app: faust.App, runtime: Runtime) -> None:
    assert isinstance(stream, faust.Stream)
    async for event in stream.noack().events():
        analytics = await runtime.analytics_ready()  # iterate first: Faust subscribes when the stream starts
        # A held record waits for its window to close (up to window_s + grace_s). Faust's graceful stop and
        # rebalances need not wait for it: not acked, it is not committed, and whoever reads the partition
        # next rebuilds its window.
        forget_unacked(app.consumer, event.message)
        await analytics.submit(event.value, partial(stream.ack, event), event.message.partition)


async def merge_stats(stream: StreamT[Any], app: faust.App, runtime: Runtime) -> None:
    assert isinstance(stream, faust.Stream)
    async for event in stream.noack().events():
        analytics = await runtime.analytics_ready()
        await runtime.stats_restored()
        forget_unacked(app.consumer, event.message)  # held until every partition's partial is in
        await analytics.submit_partial(event.value, partial(stream.ack, event), event.message.partition)


def _partitions(tps: Iterable[TP], topic: str) -> list[int]:
    return sorted(tp.partition for tp in tps if tp.topic == topic)


def register(app: faust.App, runtime: Runtime, topics: WorkerTopics) -> None:
    key_spec = runtime.settings.summaries.key
    by_key, partials = topics.enriched_by_key.get_topic_name(), topics.stats_partials.get_topic_name()

    async def repartition_enriched(stream: StreamT[Any]) -> None:
        """events.enriched → events.enriched.by-key (keyed by summaries.key)."""
        await repartition(stream, app, runtime, by_key, key_spec)

    async def analyze_by_key(stream: StreamT[Any]) -> None:
        """events.enriched.by-key → windows → events.summaries, events.stats.partials."""
        await analyze(stream, app, runtime)

    async def merge_partials(stream: StreamT[Any]) -> None:
        """events.stats.partials → events.stats, events.alerts."""
        await merge_stats(stream, app, runtime)

    app.agent(topics.enriched, name="repartition")(repartition_enriched)
    app.agent(topics.enriched_by_key, name="analyze")(analyze_by_key)
    app.agent(topics.stats_partials, name="merge_stats")(merge_partials)

    # Faust's signals call receivers as (sender, *args, signal=..., **kwargs): args[0] is the set of partitions.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mypy cannot match the union of receiver types
    async def analytics_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        revoked: set[TP] = args[0]
        runtime.assigned_by_key = [p for p in runtime.assigned_by_key if p not in _partitions(revoked, by_key)]
        if runtime.analytics is None:
            return
        dropped = runtime.analytics.revoke(_partitions(revoked, by_key))
        dropped += runtime.analytics.revoke_partials(_partitions(revoked, partials))
        log.info("analytics_revoked", partitions=len(revoked), records_let_go=dropped)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # as above
    async def analytics_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        assigned: set[TP] = args[0]
        mine = _partitions(assigned, by_key)
        runtime.assigned_by_key = mine
        if runtime.analytics is not None:
            runtime.analytics.assign(mine)
        runtime.partials_assigned(_partitions(assigned, partials))
        log.info("analytics_assigned", by_key=mine, partials=_partitions(assigned, partials))
