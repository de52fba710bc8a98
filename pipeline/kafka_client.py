"""Plain aiokafka helpers for the tools around the worker (produce, tail, tests, benchmarks)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import urlparse

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from pipeline.config import SASL_PROTOCOLS, TLS_PROTOCOLS, ConfigError, KafkaSettings, Settings


def bootstrap_servers(broker_url: str) -> str:
    """`kafka://host:port[;kafka://host2:port]` → `host:port,host2:port`."""
    hosts = []
    for url in broker_url.split(";"):
        parsed = urlparse(url if "://" in url else f"kafka://{url}")
        hosts.append(f"{parsed.hostname}:{parsed.port or 9092}")
    return ",".join(hosts)


class _KeyNeedsPassword(Exception):
    pass


def _no_key_password() -> str:
    # Called by OpenSSL only for an encrypted key; without it OpenSSL would prompt on the terminal.
    raise _KeyNeedsPassword


def kafka_ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """The TLS context of `kafka.ssl_*`: broker certificates verified (system CAs unless `ssl_cafile`),
    host names checked unless `ssl_check_hostname` is false, client certificate when given.
    Unreadable or mismatched files raise ConfigError naming the keys."""
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=kafka.ssl_cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"kafka.ssl_cafile {kafka.ssl_cafile}: not a PEM CA certificate bundle ({exc})") from None
    if kafka.ssl_certfile is not None:
        password = kafka.ssl_keyfile_password.get_secret_value() if kafka.ssl_keyfile_password else _no_key_password
        try:
            context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile, password)
        except _KeyNeedsPassword:
            raise ConfigError(
                f"kafka.ssl_keyfile {kafka.ssl_keyfile} is encrypted: set kafka.ssl_keyfile_password "
                "(env SLMSTREAM_KAFKA__SSL_KEYFILE_PASSWORD)"
            ) from None
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"kafka.ssl_certfile {kafka.ssl_certfile} / kafka.ssl_keyfile {kafka.ssl_keyfile}: cannot load the "
                f"client certificate ({exc}); both must be PEM, the key must match the certificate and "
                "kafka.ssl_keyfile_password must be the key's password"
            ) from None
    context.check_hostname = kafka.ssl_check_hostname
    return context


def client_security_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka client keyword arguments for `settings.kafka` (producer, consumer and admin take the same).

    PLAINTEXT gives `{"security_protocol": "PLAINTEXT"}`; SASL adds the mechanism and credentials, TLS the
    `ssl_context`. Raises ConfigError when the TLS files cannot be loaded.
    """
    k = settings.kafka
    kwargs: dict[str, Any] = {"security_protocol": k.protocol}
    if k.protocol in SASL_PROTOCOLS:
        assert k.sasl_password is not None  # KafkaSettings refuses SASL without it
        kwargs["sasl_mechanism"] = k.sasl_mechanism
        kwargs["sasl_plain_username"] = k.sasl_username
        kwargs["sasl_plain_password"] = k.sasl_password.get_secret_value()
    if k.protocol in TLS_PROTOCOLS:
        kwargs["ssl_context"] = kafka_ssl_context(k)
    return kwargs


async def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    replicas: int = 1,
    configs: dict[str, str] | None = None,
    **client_kwargs: Any,
) -> None:
    """Create the topics that do not exist yet, with an explicit partition count (and `configs` added to the
    topic configs, e.g. `{"cleanup.policy": "compact"}`; a topic that exists keeps its own).

    `client_kwargs` go to the admin client: pass `client_security_kwargs(settings)` for SSL/SASL brokers.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        # Explicit configs: tansu reports none, and some clients read retention.ms (brokers.md).
        topic_configs = {"retention.ms": str(7 * 24 * 3600 * 1000), **(configs or {})}
        missing = [NewTopic(n, partitions, replicas, topic_configs=topic_configs) for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a worker created it meanwhile
                await admin.create_topics(missing)
    finally:
        await admin.close()


class Rebalanced(Protocol):
    """What a consumer group's member does when partitions are taken away (may await: a commit) and given."""

    async def on_revoked(self, revoked: Sequence[TopicPartition]) -> None: ...

    def on_assigned(self, assigned: Sequence[TopicPartition]) -> None: ...


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    """aiokafka's listener, forwarding to `member` (the classify reader, the feedback reader)."""

    def __init__(self, member: Rebalanced) -> None:
        self.member = member

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self.member.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.member.on_assigned(assigned)
