"""`slmstream dlq replay`: send dead-lettered messages back to the input topic, byte for byte.

Each record on the DLQ topic (schemas/dlq.schema.json) holds the original message: key, value and headers,
base64. `replay` reads what is on the DLQ topic when it starts (not what comes after), decodes each record
and produces the original key, value and headers again (to the events topic by default), with one
header added, `slmstream-replayed-from: <dlq topic>:<partition>:<offset>`, so a replay can be traced back.
Records that are not DLQ records are skipped and counted. Once fixed upstream (or after a model outage:
`--type model_error`), messages go through the worker again; those still bad land on the DLQ again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.cli.common import fail, settings_or_exit
from pipeline.cli.topics import security_kwargs_or_exit
from pipeline.kafka_client import bootstrap_servers
from schemas import DLQ_ERROR_TYPES

app = typer.Typer(help="Inspect and replay the dead-letter topic.", no_args_is_help=True)
console = Console()

# No square brackets in help texts: rich reads them as markup and drops them.
BrokerOpt = Annotated[str | None, typer.Option(help="Broker URL. Default: SLMSTREAM_BROKER or the config file.")]

REPLAYED_FROM_HEADER = "slmstream-replayed-from"
# A replayed value is at most the input limit in normal use, but a DLQ may hold bigger ones (too_large).
MAX_REQUEST_SIZE = 16 * 2**20
IDLE_STOP_S = 1.0
FIRST_FETCH_S = 5.0


class DlqError(RuntimeError):
    """The replay cannot run (no such topic, same topic in and out)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The original message of one DLQ record, and why it was rejected."""

    error_type: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


@dataclass(slots=True)
class ReplaySummary:
    replayed: Counter[str] = field(default_factory=Counter)  # per error type (would be, with --dry-run)
    filtered: Counter[str] = field(default_factory=Counter)  # skipped: not a selected --type
    invalid: int = 0  # skipped: not a DLQ record
    read: int = 0
    limit_reached: bool = False


def _unb64(v: Any) -> bytes | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise TypeError(f"expected base64 text or null, got {type(v).__name__}")
    return base64.b64decode(v, validate=True)


def decode_record(raw: bytes | None) -> DeadLetter | None:
    """The original message of a DLQ record, or None when `raw` is not a valid DLQ record."""
    if not raw:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    error, original = doc.get("error"), doc.get("original")
    if not isinstance(error, dict) or not isinstance(original, dict):
        return None
    error_type = error.get("type")
    if error_type not in DLQ_ERROR_TYPES:
        return None
    if not {"key", "value_b64", "headers"} <= original.keys() or not isinstance(original["headers"], list):
        return None
    try:
        headers = []
        for h in original["headers"]:
            if not isinstance(h, list) or len(h) != 2 or not isinstance(h[0], str):
                return None
            headers.append((h[0], _unb64(h[1])))
        return DeadLetter(error_type, _unb64(original["key"]), _unb64(original["value_b64"]), tuple(headers))
    except (TypeError, ValueError, binascii.Error):
        return None


def selected(letter: DeadLetter, types: frozenset[str]) -> bool:
    """Whether `--type` selects this record (no `--type`: all of them)."""
    return not types or letter.error_type in types


def replay_headers(letter: DeadLetter, ref: str) -> list[tuple[str, bytes | None]]:
    """The original headers, unchanged, and where this copy was replayed from."""
    return [*letter.headers, (REPLAYED_FROM_HEADER, ref.encode())]


async def replay_dlq(
    bootstrap: str,
    from_topic: str,
    to_topic: str,
    *,
    types: frozenset[str] = frozenset(),
    dry_run: bool = False,
    limit: int | None = None,
    idle_s: float = IDLE_STOP_S,
    client_kwargs: dict[str, Any] | None = None,
) -> ReplaySummary:
    """Replay the DLQ records present at the start (see the module docstring); returns what it did."""
    if from_topic == to_topic:
        raise DlqError(f"--from-topic and --to-topic are both {from_topic!r}")
    kwargs = client_kwargs or {}
    summary = ReplaySummary()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=MAX_REQUEST_SIZE,
        **kwargs,
    )
    producer = None
    await consumer.start()
    try:
        await consumer.topics()  # a metadata request, so partitions_for_topic knows every topic
        partitions = consumer.partitions_for_topic(from_topic) or set()
        if not partitions:
            raise DlqError(f"no topic {from_topic!r}")
        tps = [TopicPartition(from_topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # What was on the topic at the start is replayed, nothing written after. The end offsets say where
        # that is on most brokers; tansu reports its last batch's first offset + 1 (brokers.md), short of the
        # real end, so records past the reported end count when they were written before the start. And
        # reading stops after `idle_s` with nothing new (an end offset that is too high never comes).
        start_ms = int(time.time() * 1000)
        ends = await consumer.end_offsets(tps)
        if not dry_run:
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=MAX_REQUEST_SIZE, **kwargs
            )
            await producer.start()
        pending: list[asyncio.Future[Any]] = []
        active = {tp for tp in tps if ends[tp] > 0}
        started, last_record = time.monotonic(), 0.0
        while active and not summary.limit_reached:
            # The first records get more time: connecting and the first fetch take a moment.
            waited = time.monotonic() - (last_record or started)
            if waited > (idle_s if last_record else max(idle_s, FIRST_FETCH_S)):
                break
            batch = await consumer.getmany(*active, timeout_ms=200)
            for tp, records in batch.items():
                if records:
                    last_record = time.monotonic()
                for rec in records:
                    if rec.offset >= ends[tp] and rec.timestamp >= start_ms:  # written after the start
                        active.discard(tp)
                        break
                    if limit is not None and sum(summary.replayed.values()) >= limit:
                        summary.limit_reached = True
                        break
                    summary.read += 1
                    letter = decode_record(rec.value)
                    if letter is None:
                        summary.invalid += 1
                    elif not selected(letter, types):
                        summary.filtered[letter.error_type] += 1
                    else:
                        if producer is not None:
                            ref = f"{rec.topic}:{rec.partition}:{rec.offset}"
                            headers = replay_headers(letter, ref)
                            pending.append(await producer.send(to_topic, letter.value, letter.key, headers=headers))
                        summary.replayed[letter.error_type] += 1
                if summary.limit_reached:
                    break
        await asyncio.gather(*pending)  # every replayed message acknowledged by the broker
    finally:
        if producer is not None:
            await producer.stop()
        await consumer.stop()
    return summary


def summary_table(summary: ReplaySummary, dry_run: bool) -> Table:
    verb = "would replay" if dry_run else "replayed"
    table = Table(title=f"DLQ replay ({'dry run, ' if dry_run else ''}{summary.read} records read)")
    table.add_column("error type")
    table.add_column(verb, justify="right")
    table.add_column("skipped (--type)", justify="right")
    for t in DLQ_ERROR_TYPES:
        if summary.replayed[t] or summary.filtered[t]:
            table.add_row(t, str(summary.replayed[t]), str(summary.filtered[t]))
    table.add_row(
        "[bold]total[/]", f"[bold]{sum(summary.replayed.values())}[/]", f"[bold]{sum(summary.filtered.values())}[/]"
    )
    if summary.invalid:
        table.add_row("[yellow]not a DLQ record[/]", "0", str(summary.invalid))
    return table


@app.command()
def replay(
    broker: BrokerOpt = None,
    from_topic: Annotated[str | None, typer.Option("--from-topic", help="Default: topics.dlq of the settings.")] = None,
    to_topic: Annotated[str | None, typer.Option("--to-topic", help="Default: topics.events of the settings.")] = None,
    types: Annotated[
        list[str] | None,
        typer.Option("--type", help=f"Replay only this error.type; repeatable. One of: {', '.join(DLQ_ERROR_TYPES)}."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be replayed; send nothing.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay at most N records.")] = None,
) -> None:
    """Re-produce the original messages of the DLQ (key, value, headers as received) to the input topic."""
    unknown = sorted(set(types or ()) - set(DLQ_ERROR_TYPES))
    if unknown:
        raise typer.BadParameter(
            f"unknown error type {', '.join(unknown)}; one of: {', '.join(DLQ_ERROR_TYPES)}", param_hint="--type"
        )
    settings = settings_or_exit()
    source = from_topic or settings.topics.dlq
    target = to_topic or settings.topics.events
    try:
        summary = asyncio.run(
            replay_dlq(
                bootstrap_servers(broker or settings.broker),
                source,
                target,
                types=frozenset(types or ()),
                dry_run=dry_run,
                limit=limit,
                client_kwargs=security_kwargs_or_exit(settings),
            )
        )
    except DlqError as exc:
        fail(str(exc), prefix="slmstream dlq replay")
    console.print(summary_table(summary, dry_run))
    if summary.limit_reached:
        console.print(f"stopped at --limit {limit}")
    if not dry_run:
        console.print(f"sent {sum(summary.replayed.values())} messages to {escape(target)}")
