"""The ceiling, for `slmstream bench identity`: what aiokafka alone carries through one process, no model.

    python -m bench.aiokafka_app      (settings from SLMSTREAM_* like the real worker)

Reads settings.topics.events in a consumer group, writes settings.topics.enriched keyed by the event id:
`getmany(max_records=2000)` → per record parse, add the `analysis` field, dump → `producer.send`; the send
futures are gathered per fetch, then the fetch's offsets are committed (at-least-once). Same fetch wait,
group timeouts and 2 ms linger as ours. A bench tool only: no validation, no DLQ, no batching.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.events import IDENTITY_ANALYSIS
from bench.quix_app import bootstrap_of
from pipeline.config import ConfigError, Settings, load_settings

MAX_RECORDS = 2000


def enrich(value: bytes) -> tuple[bytes, bytes]:
    """An input record's value → the output record's key (the event id) and value (the event plus the field)."""
    doc = orjson.loads(value)
    doc["analysis"] = IDENTITY_ANALYSIS
    return str(doc.get("id")).encode(), orjson.dumps(doc)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    bootstrap = bootstrap_of(settings.broker)
    consumer = AIOKafkaConsumer(
        settings.topics.events,
        bootstrap_servers=bootstrap,
        group_id=settings.app_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    out = settings.topics.enriched
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
            futures = []
            for records in fetched.values():
                for r in records:
                    key, value = enrich(r.value or b"{}")
                    futures.append(await producer.send(out, value, key=key))
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"aiokafka bench app: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    asyncio.run(_main(settings))  # until SIGTERM / SIGINT


if __name__ == "__main__":
    main()
