"""The `analyze` agent: events.enriched → per-key windows → summaries, stats and spike alerts.

Registered only when `summaries.enabled` or `alerts.enabled`. Acks are manual (`stream.noack()`): an enriched
record is acked only once the summary of the window holding it has been acknowledged by the broker (see
pipeline/analytics/runner.py), so a crash re-reads every record of every window not yet summarized.
"""

from __future__ import annotations

from functools import partial

from faust import StreamT

from agents.classify import runtime
from pipeline.faust_app import app, enriched_topic, settings


async def _analyze(stream: StreamT) -> None:
    analytics = None
    async for event in stream.noack().events():
        if analytics is None:  # iterate first: Faust subscribes to the topic when the stream starts
            analytics = await runtime.analytics_ready()
        # A held record waits for its window to close (up to window_s + grace_s). Faust's graceful stop and
        # rebalances wait for every record that is not acked (`wait_empty`); these need not be waited for: not
        # acked, they are not committed, and whoever reads the partition next rebuilds their windows.
        unacked = getattr(app.consumer, "_unacked_messages", None)  # faust-streaming 0.15 keeps no public API
        if unacked is not None:
            unacked.discard(event.message)
        await analytics.submit(event.value, partial(stream.ack, event))


if settings.summaries.enabled or settings.alerts.enabled:
    analyze = app.agent(enriched_topic, name="analyze")(_analyze)
