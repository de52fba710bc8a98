"""The Faust app: settings → app → topics. `faust -A pipeline worker -l info` runs it.

Settings are validated here, at import, so a wrong setting stops the worker before it touches Kafka,
with a message naming the setting.
"""

from __future__ import annotations

import sys

import faust

from pipeline import logs
from pipeline.config import ConfigError, Settings, load_settings
from pipeline.kafka_transport import Transport


class SlmApp(faust.App):
    """faust.App with our transport (fetch wait we control) and the settings at hand."""

    settings: Settings
    fetch_max_wait_ms: int

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)


def create_app(settings: Settings) -> SlmApp:
    logs.configure(settings.log_format, settings.log_level)
    app = SlmApp(
        settings.app_id,
        broker=settings.broker,
        key_serializer="raw",
        value_serializer="raw",
        web_host=settings.web.host,
        web_bind=settings.web.host,
        web_port=settings.web.port,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replicas,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        # Small group timeouts: a restarted worker rejoins in seconds (brokers.md).
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_rebalance_timeout=6,
        broker_commit_interval=1.0,
        producer_linger_ms=2,
        stream_buffer_maxsize=max(4096, settings.batching.queue_limit),
    )
    app.settings = settings
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    return app


def _raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    # Raw bytes in and out: we validate ourselves, so a malformed message can never crash a codec.
    return app.topic(
        name, partitions=partitions, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


try:
    settings = load_settings()
except ConfigError as exc:
    print(f"slmstream: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

app = create_app(settings)
_p = settings.topics.partitions
events_topic = _raw_topic(app, settings.topics.events, _p)
enriched_topic = _raw_topic(app, settings.topics.enriched, _p)
dlq_topic = _raw_topic(app, settings.topics.dlq, _p)
deferred_topic = _raw_topic(app, settings.topics.deferred, _p)
ALL_TOPICS = (events_topic, enriched_topic, dlq_topic, deferred_topic)
