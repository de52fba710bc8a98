"""The `analyze` agent: events.enriched → per-key windows → summaries, stats and spike alerts.

Registered (`register(app, runtime, topics)`) only when `summaries.enabled` or `alerts.enabled`. Acks are
manual (`stream.noack()`): an enriched record is acked only once the summary of the window holding it has been
acknowledged by the broker (see pipeline/analytics/runner.py), so a crash re-reads every record of every window
not yet summarized.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import faust
from faust import StreamT

from pipeline.analytics.runner import WindowAnalytics
from pipeline.faust_app import WorkerTopics
from pipeline.kafka_transport import forget_unacked
from pipeline.runtime import Runtime


async def analyze(stream: StreamT[Any], app: faust.App, runtime: Runtime) -> None:
    analytics: WindowAnalytics | None = None
    assert isinstance(stream, faust.Stream)  # what Faust gives an agent; StreamT declares no noack()
    async for event in stream.noack().events():
        if analytics is None:  # iterate first: Faust subscribes to the topic when the stream starts
            analytics = await runtime.analytics_ready()
        # A held record waits for its window to close (up to window_s + grace_s). Faust's graceful stop and
        # rebalances need not wait for it: not acked, it is not committed, and whoever reads the partition
        # next rebuilds its window.
        forget_unacked(app.consumer, event.message)
        await analytics.submit(event.value, partial(stream.ack, event))


def register(app: faust.App, runtime: Runtime, topics: WorkerTopics) -> None:
    async def analyze_enriched(stream: StreamT[Any]) -> None:
        """events.enriched → windows → events.summaries / events.stats / events.alerts."""
        await analyze(stream, app, runtime)

    app.agent(topics.enriched, name="analyze")(analyze_enriched)
