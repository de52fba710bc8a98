"""Plain aiokafka helpers for the tools around the worker (produce, tail, tests, benchmarks)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from urllib.parse import urlparse

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


def bootstrap_servers(broker_url: str) -> str:
    """`kafka://host:port[;kafka://host2:port]` → `host:port,host2:port`."""
    hosts = []
    for url in broker_url.split(";"):
        parsed = urlparse(url if "://" in url else f"kafka://{url}")
        hosts.append(f"{parsed.hostname}:{parsed.port or 9092}")
    return ",".join(hosts)


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int, replicas: int = 1) -> None:
    """Create the topics that do not exist yet, with an explicit partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        # Explicit configs: tansu reports none, and some clients read retention.ms (brokers.md).
        missing = [
            NewTopic(n, partitions, replicas, topic_configs={"retention.ms": str(7 * 24 * 3600 * 1000)})
            for n in names
            if n not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a worker created it meanwhile
                await admin.create_topics(missing)
    finally:
        await admin.close()
