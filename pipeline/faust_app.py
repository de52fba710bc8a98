"""The Faust app and its topics, made from validated settings: `create_app(settings)`, `worker_topics(app)`.

Importing this module reads no settings and creates nothing; pipeline/worker.py assembles a worker from these
(`faust -A pipeline worker` asks `pipeline.app`, built on first access from the settings).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust
import structlog
from faust.types.auth import CredentialsT

from pipeline import logs
from pipeline.config import ConfigError, Settings, is_loopback_host
from pipeline.kafka_client import kafka_ssl_context
from pipeline.kafka_transport import Transport
from pipeline.output.partitioner import DefaultPartitioner
from pipeline.web import bearer_auth_middleware

if TYPE_CHECKING:
    from pipeline.runtime import Runtime


class SlmApp(faust.App):
    """faust.App with our transport (fetch wait we control) and the settings at hand."""

    settings: Settings
    fetch_max_wait_ms: int
    runtime: Runtime  # set by pipeline/worker.py's build_worker

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)

    def on_webserver_init(self, web: Any) -> None:
        # `faust worker --web-bind` replaces web.host after the settings were checked: check again.
        try:
            check_web_bind(str(self.conf.web_bind), self.settings)
        except ConfigError as exc:
            print(f"slmstream: {exc}", file=sys.stderr)
            raise
        super().on_webserver_init(web)


def check_web_bind(bind: str, settings: Settings) -> None:
    """Refuse to serve beyond loopback without a token, whichever way the address was chosen."""
    if settings.web.token is None and not is_loopback_host(bind):
        msg = (
            f"the web server would listen on {bind!r} (faust worker --web-bind?) without an access token: "
            "set web.token (env SLMSTREAM_WEB__TOKEN) or bind 127.0.0.1"
        )
        raise ConfigError(msg)


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's `broker_credentials` for `settings.kafka`: None for PLAINTEXT (ConfigError: bad TLS files)."""
    k = settings.kafka
    if k.protocol == "PLAINTEXT":
        return None
    if k.protocol == "SSL":
        return faust.SSLCredentials(kafka_ssl_context(k))
    assert k.sasl_password is not None  # KafkaSettings refuses SASL without it
    return faust.SASLCredentials(
        username=k.sasl_username,
        password=k.sasl_password.get_secret_value(),
        mechanism=k.sasl_mechanism,
        # With a context SASLCredentials is SASL_SSL, without it SASL_PLAINTEXT.
        ssl_context=kafka_ssl_context(k) if k.protocol == "SASL_SSL" else None,
    )


def create_app(settings: Settings) -> SlmApp:
    logs.configure(settings.log_format, settings.log_level)
    log = structlog.get_logger(__name__)  # after configure: picks up this configuration
    log.info("effective_config", config=settings.redacted_dump())  # secrets read **********
    for warning in settings.security_warnings():
        log.warning("insecure_setting", detail=warning)
    web_options: dict[str, Any] = {}
    if settings.web.token is not None:
        web_options["middlewares"] = [bearer_auth_middleware(settings.web.token)]
    app = SlmApp(
        settings.app_id,
        broker=settings.broker,
        broker_credentials=broker_credentials(settings),
        key_serializer="raw",
        value_serializer="raw",
        web_host=settings.web.host,
        web_bind=settings.web.host,
        web_port=settings.web.port,
        web_application_options=web_options,
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
        # Record batches of up to 128 KiB (Kafka's default is 16 KiB): the classify path fills one per partition
        # while the previous one travels, and at ~700 B per enriched record 16 KiB filled within a round trip.
        # Measured (bench identity, quiet, back to back): 46 µs of worker CPU per event instead of 51.
        producer_max_batch_size=128 * 1024,
        producer_partitioner=DefaultPartitioner(),  # Kafka's murmur2, as aiokafka's but ~5x cheaper per record
        stream_buffer_maxsize=max(4096, settings.batching.queue_limit),
    )
    app.settings = settings
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    return app


@dataclass(frozen=True, slots=True)
class WorkerTopics:
    """The worker's topics, all raw bytes in and out (we validate ourselves, so a malformed message can never
    crash a codec). The analytics ones are declared at start only when summaries or alerts are on: the two
    internal hops (`enriched_by_key`, `stats_partials`) and the three outputs."""

    events: faust.TopicT
    enriched: faust.TopicT
    dlq: faust.TopicT
    deferred: faust.TopicT
    enriched_by_key: faust.TopicT
    stats_partials: faust.TopicT
    summaries: faust.TopicT
    stats: faust.TopicT
    alerts: faust.TopicT

    @property
    def classify_path(self) -> tuple[faust.TopicT, ...]:
        return (self.events, self.enriched, self.dlq, self.deferred)

    @property
    def analytics(self) -> tuple[faust.TopicT, ...]:
        return (self.enriched_by_key, self.stats_partials, self.summaries, self.stats, self.alerts)


def worker_topics(app: SlmApp) -> WorkerTopics:
    t = app.settings.topics

    def raw(name: str) -> faust.TopicT:
        return app.topic(
            name,
            partitions=t.partitions,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    return WorkerTopics(
        events=raw(t.events),
        enriched=raw(t.enriched),
        dlq=raw(t.dlq),
        deferred=raw(t.deferred),
        enriched_by_key=raw(t.enriched_by_key),
        stats_partials=raw(t.stats_partials),
        summaries=raw(t.summaries),
        stats=raw(t.stats),
        alerts=raw(t.alerts),
    )
