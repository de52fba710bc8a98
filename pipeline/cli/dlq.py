"""`slmstream dlq replay`: send dead-lettered messages back to the input topic, byte for byte.

Each record on the DLQ topic (schemas/dlq.schema.json) holds the original message: key, value and headers,
base64. `replay` reads what is on the DLQ topic when it starts (not what comes after), decodes each record
and produces the original key, value and headers again (to the events topic by default), with one
header added, `slmstream-replayed-from: <dlq topic>:<partition>:<offset>`, so a replay can be traced back.
Records that are not DLQ records are skipped and counted. Once fixed upstream (or after a model outage:
`--type model_error`), messages go through the worker again; those still bad land on the DLQ again.

A value is never replayed cut. A DLQ record holds at most the first 512 KiB of a value (`value_truncated`,
with `value_sha256` of the whole); for such a record the whole message is read back from the source topic at
`original.topic:partition:offset` and sent only when its SHA-256 matches. When that record is gone
(retention, compaction) or is another message, the DLQ record is refused with the reason, the others are
replayed all the same, and the command exits 1 after them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeGuard

import orjson
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.cli.common import fail, print_error, settings_or_exit
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
# How long the whole message of a cut value may take to arrive from its source topic before it counts as gone.
SOURCE_WAIT_S = 5.0
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class DlqError(RuntimeError):
    """The replay cannot run (no such topic, same topic in and out)."""


Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class CutValue:
    """A value the DLQ record holds only the start of; the whole message stays at `ref` in its source topic."""

    topic: str
    partition: int
    offset: int
    sha256: str  # hex, of the whole value
    size: int | None  # bytes of the whole value

    @property
    def ref(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The original message of one DLQ record, and why it was rejected."""

    error_type: str
    key: bytes | None
    value: bytes | None  # only the start of the value when `cut` is set
    headers: Headers
    cut: CutValue | None = None


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """The record found at (or, when that one is gone, first after) a cut value's offset in its source topic."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True, slots=True)
class Missing:
    """No record at a cut value's offset: why (the partition's first offset, no such partition, ...)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A selected DLQ record that was not replayed, and why."""

    ref: str  # the DLQ record: topic:partition:offset
    error_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.ref} ({self.error_type}) not replayed: {self.reason}"


class Refused(Exception):
    """This DLQ record cannot be replayed as it was received (the message says why); the others still can."""


@dataclass(slots=True)
class ReplaySummary:
    replayed: Counter[str] = field(default_factory=Counter)  # per error type (would be, with --dry-run)
    filtered: Counter[str] = field(default_factory=Counter)  # skipped: not a selected --type
    invalid: int = 0  # skipped: not a DLQ record
    read: int = 0
    limit_reached: bool = False
    refused: list[Refusal] = field(default_factory=list)  # selected, but not replayed (a cut value gone)
    from_source: int = 0  # replayed whole from the source topic: the DLQ record held the value cut


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
        letter = DeadLetter(error_type, _unb64(original["key"]), _unb64(original["value_b64"]), tuple(headers))
    except (TypeError, ValueError, binascii.Error):
        return None
    truncated = original.get("value_truncated", False)
    if truncated is False:
        return letter
    cut = _cut_value(original) if truncated is True else None
    # A cut value without where to find it whole (or a malformed flag) is not a record we could ever replay.
    return None if cut is None else DeadLetter(letter.error_type, letter.key, letter.value, letter.headers, cut)


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _cut_value(original: dict[str, Any]) -> CutValue | None:
    topic, partition, offset = original.get("topic"), original.get("partition"), original.get("offset")
    sha, size = original.get("value_sha256"), original.get("value_bytes")
    if not isinstance(topic, str) or not topic or not _is_int(partition) or not _is_int(offset):
        return None
    if partition < 0 or offset < 0 or not isinstance(sha, str) or not SHA256_HEX.fullmatch(sha):
        return None
    if size is not None and not _is_int(size):
        return None
    return CutValue(topic, partition, offset, sha, size)


def whole_letter(letter: DeadLetter, found: SourceRecord | Missing) -> DeadLetter:
    """The message to replay for a DLQ record whose value is cut: the record read back from the source topic,
    when it is the one the DLQ record describes (same offset, same SHA-256). Raises Refused otherwise."""
    cut = letter.cut
    if cut is None:
        return letter
    what = f"the DLQ record holds only the first {len(letter.value or b'')} bytes of the value"
    if isinstance(found, Missing):
        raise Refused(f"{what}, and the whole message is gone from {cut.ref}: {found.reason}")
    if found.offset != cut.offset:
        raise Refused(
            f"{what}, and the whole message is gone from {cut.ref}: the partition goes on at offset "
            f"{found.offset} (deleted or compacted)"
        )
    if found.value is None or (digest := hashlib.sha256(found.value).hexdigest()) != cut.sha256:
        got = "a null value" if found.value is None else f"SHA-256 {digest[:16]}..., {len(found.value)} bytes"
        raise Refused(
            f"{what}, and the record at {cut.ref} is another message ({got}; the DLQ record names SHA-256 "
            f"{cut.sha256[:16]}..., {cut.size} bytes)"
        )
    return DeadLetter(letter.error_type, found.key, found.value, found.headers)


class SourceReader:
    """Reads single records back from the source topics, by offset: the whole messages of cut values."""

    def __init__(self, bootstrap: str, client_kwargs: dict[str, Any], wait_s: float = SOURCE_WAIT_S) -> None:
        self.wait_s = wait_s
        # auto_offset_reset "none": an offset below the partition's start raises, rather than jumping elsewhere.
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="none",
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=MAX_REQUEST_SIZE,
            **client_kwargs,
        )
        self.started = False

    async def read(self, cut: CutValue) -> SourceRecord | Missing:
        if not self.started:
            await self.consumer.start()
            self.started = True
        await self.consumer.topics()  # fresh metadata: partitions_for_topic knows every topic
        partitions = self.consumer.partitions_for_topic(cut.topic) or set()
        if cut.partition not in partitions:
            return Missing(f"no partition {cut.partition} in topic {cut.topic!r}")
        tp = TopicPartition(cut.topic, cut.partition)
        self.consumer.assign([tp])
        first = (await self.consumer.beginning_offsets([tp]))[tp]
        if cut.offset < first:
            return Missing(f"the partition starts at offset {first} now (retention)")
        self.consumer.seek(tp, cut.offset)
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            try:
                batch = await self.consumer.getmany(tp, timeout_ms=200)
            except OffsetOutOfRangeError:
                return Missing(f"offset {cut.offset} is out of range")
            for rec in batch.get(tp, []):
                if rec.offset >= cut.offset:  # a fetch may begin earlier, at its batch's first record
                    return SourceRecord(rec.offset, rec.key, rec.value, tuple(rec.headers))
        return Missing(f"no record at offset {cut.offset} within {self.wait_s:g} s")

    async def stop(self) -> None:
        if self.started:
            await self.consumer.stop()


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
    source_wait_s: float = SOURCE_WAIT_S,
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
    source = SourceReader(bootstrap, kwargs, source_wait_s)
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
                        ref = f"{rec.topic}:{rec.partition}:{rec.offset}"
                        if letter.cut is not None:
                            try:
                                letter = whole_letter(letter, await source.read(letter.cut))
                            except Refused as exc:
                                summary.refused.append(Refusal(ref, letter.error_type, str(exc)))
                                continue
                            summary.from_source += 1
                        if producer is not None:
                            headers = replay_headers(letter, ref)
                            pending.append(await producer.send(to_topic, letter.value, letter.key, headers=headers))
                        summary.replayed[letter.error_type] += 1
                if records:  # after the work: reading a source record must not count as idle time
                    last_record = time.monotonic()
                if summary.limit_reached:
                    break
        await asyncio.gather(*pending)  # every replayed message acknowledged by the broker
    finally:
        if producer is not None:
            await producer.stop()
        await source.stop()
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
    if summary.refused:
        table.add_row("[red]refused (see below)[/]", "0", str(len(summary.refused)))
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
    """Re-produce the original messages of the DLQ (key, value, headers as received) to the input topic.

    A value the DLQ record holds cut is read whole from its source topic, or refused (exit 1) when gone."""
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
    # soft_wrap: whole lines, whatever the terminal's width (what scripts and tests read).
    if summary.limit_reached:
        console.print(f"stopped at --limit {limit}", soft_wrap=True)
    if summary.from_source:
        console.print(
            f"{summary.from_source} cut in their DLQ record: read whole from their source topic", soft_wrap=True
        )
    if not dry_run:
        console.print(f"sent {sum(summary.replayed.values())} messages to {escape(target)}", soft_wrap=True)
    for refusal in summary.refused:
        print_error(str(refusal), prefix="slmstream dlq replay")
    if summary.refused:
        raise typer.Exit(1)
