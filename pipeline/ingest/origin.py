"""The Origin of a Faust message: topic, partition, offset, key, headers, Kafka timestamp."""

from __future__ import annotations

from typing import Any

from schemas import Origin


def origin_of(message: Any) -> Origin:
    raw_headers = message.headers or ()
    if isinstance(raw_headers, dict):
        raw_headers = raw_headers.items()
    headers = tuple((str(k), v if isinstance(v, bytes | None) else str(v).encode()) for k, v in raw_headers)
    ts = message.timestamp
    key = message.key
    return Origin(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=key if isinstance(key, bytes | None) else str(key).encode(),
        headers=headers,
        timestamp_ms=int(ts * 1000) if ts else None,
    )
