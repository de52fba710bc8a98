"""`slmstream produce FILE.jsonl` and `slmstream tail TOPIC`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pipeline.analytics.records import KeepHighest
from pipeline.cli.analytics_render import TOPIC_ALIASES, render_analytics
from pipeline.cli.common import fail, settings_or_exit
from pipeline.config import ConfigError, Settings
from pipeline.kafka_client import bootstrap_servers, client_security_kwargs, ensure_topics

console = Console()

BrokerOpt = Annotated[str | None, typer.Option(help="Broker URL [default: SLMSTREAM_BROKER or the config file].")]


def security_kwargs_or_exit(settings: Settings) -> dict[str, Any]:
    """aiokafka security kwargs from `settings.kafka` (SSL/SASL), or exit 2 with the reason."""
    try:
        return client_security_kwargs(settings)
    except ConfigError as exc:
        fail(str(exc), 2)


def _key_of(line: bytes) -> bytes | None:
    """The event's `key` field, when the line is a JSON object that has one (same customer → same partition)."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    key = doc.get("key") if isinstance(doc, dict) else None
    return key.encode() if isinstance(key, str) else None


def produce(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="One message per line (JSONL).")],
    topic: Annotated[str | None, typer.Option(help="[default: the events topic]")] = None,
    rate: Annotated[float, typer.Option(help="Messages per second; 0 = as fast as possible.")] = 0.0,
    repeat: Annotated[int, typer.Option(help="Send the file this many times.")] = 1,
    broker: BrokerOpt = None,
) -> None:
    """Send each line of FILE as one message (as is: the worker validates), with a progress bar."""
    settings = settings_or_exit()
    lines = [ln for ln in file.read_bytes().splitlines() if ln.strip()]
    sent = asyncio.run(
        _produce(
            lines * repeat,
            topic or settings.topics.events,
            rate,
            bootstrap_servers(broker or settings.broker),
            settings.topics.partitions,
            security_kwargs_or_exit(settings),
        )
    )
    console.print(f"sent {sent} messages to {escape(topic or settings.topics.events)}", soft_wrap=True)


async def _produce(
    lines: list[bytes],
    topic: str,
    rate: float,
    bootstrap: str,
    partitions: int,
    client_kwargs: dict[str, Any] | None = None,
) -> int:
    client_kwargs = client_kwargs or {}
    await ensure_topics(bootstrap, [topic], partitions, **client_kwargs)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", **client_kwargs)
    await producer.start()
    start = time.perf_counter()
    try:
        with Progress(
            TextColumn("producing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("produce", total=len(lines))
            pending = []
            for i, line in enumerate(lines):
                if rate > 0:  # open loop: keep to the schedule, do not wait for acks
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                pending.append(await producer.send(topic, line, key=_key_of(line)))
                if len(pending) >= 1000:
                    await asyncio.gather(*pending)
                    pending.clear()
                bar.advance(task)
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(lines)


def tail(
    topic: Annotated[
        str,
        typer.Argument(help="Topic to read, e.g. events.enriched, events.dlq, or summaries / alerts / stats / facts."),
    ],
    n: Annotated[int, typer.Option("-n", help="Show the last N records of each partition (0: from the start).")] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep waiting for new records.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print each value as one JSON line.")] = False,
    show_all: Annotated[
        bool,
        typer.Option("--all", help="Summaries and stats: show every record, duplicates and superseded revisions too."),
    ] = False,
    broker: BrokerOpt = None,
) -> None:
    """Print records from a topic: readable by default, raw JSON lines with --json.

    Of several summaries (or stats records) of one key and window, only one that ranks above those shown
    before it is printed: the highest (final, revision), as the schemas tell readers to keep."""
    settings = settings_or_exit()
    if topic in TOPIC_ALIASES:
        topic = getattr(settings.topics, topic)
    elif topic == "facts":
        topic = settings.facts.topic
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            _tail(
                topic,
                n,
                follow,
                as_json,
                bootstrap_servers(broker or settings.broker),
                security_kwargs_or_exit(settings),
                keep=None if show_all else KeepHighest(),
                keyed=topic == settings.facts.topic,
            )
        )


async def _tail(
    topic: str,
    n: int,
    follow: bool,
    as_json: bool,
    bootstrap: str,
    client_kwargs: dict[str, Any] | None = None,
    keep: KeepHighest | None = None,
    keyed: bool = False,
) -> None:
    """`keyed`: print each record's key before its value (the reference facts: the key is the entity)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50, **(client_kwargs or {})
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            fail(f"no topic {topic}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(ends[tp] - n, 0) if n else 0)
        remaining = {tp for tp in tps if ends[tp] > 0}
        idle_since = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                idle_since = time.monotonic()
                for rec in records:
                    if rec.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
                    if keep is not None and not admitted(keep, rec.value):
                        continue
                    shown = render_keyed(rec.key, rec.value, as_json) if keyed else render(rec.value, as_json)
                    console.print(shown, soft_wrap=True, highlight=False)
            # tansu can report a too-high end offset (brokers.md): also stop after 1 s with nothing new
            if not follow and (not remaining or time.monotonic() - idle_since > 1.0):
                break
    finally:
        await consumer.stop()


def admitted(keep: KeepHighest, value: bytes | None) -> bool:
    """False for a summary or stats record that a record shown before supersedes (or duplicates)."""
    try:
        doc = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return True
    return not isinstance(doc, dict) or keep.admit(doc)


def render_keyed(key: bytes | None, value: bytes | None, as_json: bool) -> str:
    """A record of a keyed topic (the reference facts): its key, then its value; a tombstone says so."""
    k = (key or b"").decode("utf-8", "replace")
    if as_json:
        doc = orjson.loads(value) if value is not None and _is_json(value) else None
        return orjson.dumps({"key": k, "value": doc}).decode()
    shown = "[dim](deleted)[/]" if value is None else escape(value.decode("utf-8", "replace"))
    return f"[bold]{escape(k)}[/]  {shown}"


def _is_json(value: bytes) -> bool:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


def render(value: bytes | None, as_json: bool) -> str:
    if value is None:
        return "null"
    if as_json:
        return value.decode("utf-8", "replace")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return escape(value[:200].decode("utf-8", "replace"))
    if not isinstance(doc, dict):
        return escape(value[:200].decode())
    if "analysis" in doc:
        a = doc["analysis"]
        flags = "".join(
            f" [{c}]{t}[/]"
            for t, c, on in (
                ("late", "yellow", not a["deadline_met"]),
                ("degraded", "magenta", a["degraded"]),
                ("deferred", "cyan", a["deferred"]),
            )
            if on
        )
        text = doc["text"].replace("\n", " ")
        text = text if len(text) <= 70 else text[:67] + "..."
        return (
            f"[bold]{a['label']:<17}[/] {a['score']:.2f} {a['latency_ms']['total']:7.1f} ms "
            f"{escape(doc['id']):<14} {escape(text)}{flags}"
        )
    analytics = render_analytics(doc)
    if analytics is not None:
        return analytics
    if "error" in doc and "original" in doc:
        o = doc["original"]
        return (
            f"[red]{doc['error']['type']:<14}[/] {o['topic']}:{o['partition']}:{o['offset']}  "
            f"{escape(doc['error']['message'][:100])}"
        )
    return escape(value.decode("utf-8", "replace"))
