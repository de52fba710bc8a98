"""The usual way, for the benchmark: a Faust agent that calls the model once per event.

    faust -A bench.naive_app worker      (settings from SLMSTREAM_* like the real worker)

Same broker settings as ours (our transport with the low fetch wait, the same group timeouts and linger),
same model file and threads; the model call runs in a thread (`asyncio.to_thread`) so the event loop is
not blocked — the fair version of the naive agent. No deadlines, no batching, no DLQ: a bench tool only.

With `model.encoder: identity` (the `bench identity` peer) there is no model call: `async for k, v in
stream.items()` → parse, add the field → `await topic.send`, the plain per-event Faust agent.
"""

from __future__ import annotations

import asyncio
import sys

import faust
import orjson

from bench.events import IDENTITY_ANALYSIS
from pipeline.config import ConfigError, load_settings
from pipeline.kafka_transport import Transport
from pipeline.model.classifier import LabelClassifier
from pipeline.model.identity import IDENTITY


class NaiveApp(faust.App):
    fetch_max_wait_ms: int

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)


try:
    settings = load_settings()
except ConfigError as exc:
    print(f"naive bench app: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

# The broker and group settings of pipeline/faust_app.py's app, repeated on purpose: the peer must stay the
# plain Faust agent it stands for, not build on our worker's assembly.
app = NaiveApp(
    settings.app_id,
    broker=settings.broker,
    key_serializer="raw",
    value_serializer="raw",
    web_host=settings.web.host,
    web_port=settings.web.port,
    topic_partitions=settings.topics.partitions,
    topic_disable_leader=True,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=6,
    broker_heartbeat_interval=1,
    broker_rebalance_timeout=6,
    broker_commit_interval=1.0,
    producer_linger_ms=2,
)
app.fetch_max_wait_ms = settings.fetch_max_wait_ms
_p = settings.topics.partitions
events_topic = app.topic(settings.topics.events, partitions=_p, key_type=bytes, value_type=bytes)
results_topic = app.topic(settings.topics.enriched, partitions=_p, key_type=bytes, value_type=bytes)


def _load() -> LabelClassifier:
    from pipeline.runtime import load_classifier  # the same construction as the real worker

    return load_classifier(settings, settings.model.encoder)


@app.agent(events_topic, name="naive-classify")
async def classify(stream: faust.StreamT) -> None:
    if settings.model.encoder == IDENTITY:
        await _add_field(stream)
        return
    classifier: LabelClassifier | None = None
    async for value in stream:
        if classifier is None:  # iterate first: Faust subscribes when the stream starts
            classifier = await asyncio.to_thread(_load)
        doc = orjson.loads(value)
        (result,) = await asyncio.to_thread(classifier.classify, [doc["text"]])
        doc["analysis"] = {"label": result.label, "score": result.score}
        await results_topic.send(key=str(doc["id"]).encode(), value=orjson.dumps(doc))


async def _add_field(stream: faust.StreamT) -> None:
    async for _key, value in stream.items():
        doc = orjson.loads(value)
        doc["analysis"] = IDENTITY_ANALYSIS
        await results_topic.send(key=str(doc["id"]).encode(), value=orjson.dumps(doc))
