"""Agents for the classification path: `register(app, runtime, topics)` adds them to the app.

Acks are manual (`stream.noack()`): an input offset is committed only after the broker has acknowledged
the record it produced (enriched, DLQ or deferred). A crash replays what was in flight: at-least-once.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import faust
from faust import StreamT

from pipeline import metrics
from pipeline.batching.scheduler import BatchScheduler, Work
from pipeline.faust_app import WorkerTopics
from pipeline.ingest.origin import origin_of
from pipeline.ingest.validate import Rejection, validate
from pipeline.output.records import origin_of_deferred
from pipeline.runtime import Runtime


async def consume(stream: StreamT[Any], runtime: Runtime, topic: faust.TopicT, *, deferred: bool) -> None:
    """Validate each message of `stream` and hand it to the scheduler (bad input: to the DLQ)."""
    scheduler: BatchScheduler | None = None
    topic_in = metrics.EVENTS_IN.labels(topic.get_topic_name())
    input_settings = runtime.settings.input
    assert isinstance(stream, faust.Stream)  # what Faust gives an agent; StreamT declares no noack()
    async for event in stream.noack().events():
        if scheduler is None:  # iterate first: Faust subscribes to the topic when the stream starts
            scheduler = await runtime.ready()
        topic_in.inc()
        origin = origin_of(event.message)
        if deferred:
            origin = origin_of_deferred(origin)
        value = event.value
        ack = partial(stream.ack, event)
        result = validate(value, origin, input_settings)
        if isinstance(result, Rejection):
            await scheduler.reject(result.type, result.message, origin, value, ack)
        elif deferred:
            await scheduler.submit_deferred(Work(result, value, ack))
        else:
            await scheduler.submit(Work(result, value, ack))


def register(app: faust.App, runtime: Runtime, topics: WorkerTopics) -> None:
    async def classify(stream: StreamT[Any]) -> None:
        """events → validated → batched → classified → events.enriched (bad input → events.dlq)."""
        await consume(stream, runtime, topics.events, deferred=False)

    async def classify_deferred(stream: StreamT[Any]) -> None:
        """events.deferred → classified when the model has idle time → events.enriched."""
        await consume(stream, runtime, topics.deferred, deferred=True)

    app.agent(topics.events, name="classify")(classify)
    app.agent(topics.deferred, name="classify-deferred")(classify_deferred)
