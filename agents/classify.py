"""Agents for the classification path.

Acks are manual (`stream.noack()`): an input offset is committed only after the broker has acknowledged
the record it produced (enriched, DLQ or deferred). A crash replays what was in flight: at-least-once.
"""

from __future__ import annotations

from functools import partial

from faust import StreamT

from pipeline import metrics
from pipeline.batching.scheduler import BatchScheduler, Work
from pipeline.dashboard.live import LiveState
from pipeline.faust_app import app, deferred_topic, events_topic, settings
from pipeline.ingest.origin import origin_of
from pipeline.ingest.validate import Rejection, validate
from pipeline.output.records import origin_of_deferred
from pipeline.runtime import Runtime
from pipeline.web import register_pages

live = LiveState()  # the dashboard's state: fed by the loops as an observer, read by /api/live
runtime = Runtime(app, observers=(metrics.MetricsObserver(), live))
app.task(runtime.run)
app.timer(5.0)(runtime.record_lag)
register_pages(app, lambda: runtime.scheduler is not None, live)


async def _consume(stream: StreamT, *, deferred: bool) -> None:
    scheduler: BatchScheduler | None = None
    topic_in = metrics.EVENTS_IN.labels(deferred_topic.get_topic_name() if deferred else events_topic.get_topic_name())
    async for event in stream.noack().events():
        if scheduler is None:  # iterate first: Faust subscribes to the topic when the stream starts
            scheduler = await runtime.ready()
        topic_in.inc()
        origin = origin_of(event.message)
        if deferred:
            origin = origin_of_deferred(origin)
        value = event.value
        ack = partial(stream.ack, event)
        result = validate(value, origin, settings.input)
        if isinstance(result, Rejection):
            await scheduler.reject(result.type, result.message, origin, value, ack)
        elif deferred:
            await scheduler.submit_deferred(Work(result, value, ack))
        else:
            await scheduler.submit(Work(result, value, ack))


@app.agent(events_topic, name="classify")
async def classify(stream: StreamT) -> None:
    """events → validated → batched → classified → events.enriched (bad input → events.dlq)."""
    await _consume(stream, deferred=False)


@app.agent(deferred_topic, name="classify-deferred")
async def classify_deferred(stream: StreamT) -> None:
    """events.deferred → classified when the model has idle time → events.enriched."""
    await _consume(stream, deferred=True)
