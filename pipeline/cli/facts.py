"""`slmstream facts load FILE.jsonl` and `slmstream facts delete ID...`: publish to the reference topic."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.markup import escape

from pipeline.cli.common import fail, settings_or_exit
from pipeline.cli.topics import BrokerOpt, security_kwargs_or_exit
from pipeline.config import Settings
from pipeline.facts.load import FactRecord, FactsFileError, parse_facts_lines
from pipeline.facts.reader import ensure_facts_topic
from pipeline.kafka_client import bootstrap_servers

console = Console(soft_wrap=True, highlight=False)
app = typer.Typer(help='Reference facts joined to events (README "Facts").', no_args_is_help=True)


class SendFailed(Exception):
    def __init__(self, sent: int, record: FactRecord, error: BaseException) -> None:
        super().__init__(f"line {record.line} (id {record.key.decode(errors='replace')}): {error!r}")
        self.sent = sent


@app.command("load")
def load(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help='JSONL: {"id": ..., "facts": {...}}.')],
    broker: BrokerOpt = None,
) -> None:
    """Publish each line's facts to the reference topic (`facts.topic`), keyed by its id; `"facts": null`
    deletes the entity. Every line is checked first: a bad line and nothing is sent."""
    settings = settings_or_exit()
    try:
        records = parse_facts_lines(file.read_bytes().splitlines(), settings.facts.max_value_bytes, file.name)
    except FactsFileError as exc:
        fail(str(exc), 2)
    _publish(settings, records, broker)
    deleted = sum(1 for r in records if r.value is None)
    console.print(f"published {len(records) - deleted} facts and {deleted} deletions to {escape(settings.facts.topic)}")


@app.command("delete")
def delete(
    ids: Annotated[list[str], typer.Argument(help="Entity ids to delete (a tombstone each).")],
    broker: BrokerOpt = None,
) -> None:
    """Delete entities from the reference topic: a tombstone (null value) for each id; every worker drops it."""
    settings = settings_or_exit()
    if any(not i for i in ids):
        fail("an entity id cannot be empty", 2)
    _publish(settings, [FactRecord(0, i.encode(), None) for i in ids], broker)
    console.print(f"deleted {len(ids)} entities from {escape(settings.facts.topic)}")


def _publish(settings: Settings, records: list[FactRecord], broker: str | None) -> None:
    client_kwargs = security_kwargs_or_exit(settings)
    if broker is not None:
        settings = settings.model_copy(update={"broker": broker})
    try:
        asyncio.run(_send(settings, records, client_kwargs))
    except SendFailed as exc:
        fail(
            f"sent {exc.sent} of {len(records)} records, then failed at {exc}; the records sent stay published "
            "(a fact is a keyed upsert: loading the whole file again is safe)",
            1,
        )


async def _send(settings: Settings, records: list[FactRecord], client_kwargs: dict[str, Any]) -> None:
    """Send in file order and wait for the broker's ack of each; SendFailed says how many were acked."""
    await ensure_facts_topic(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings.broker), acks="all", linger_ms=5, **client_kwargs
    )
    await producer.start()
    futures: list[asyncio.Future[Any]] = []
    try:
        for record in records:
            try:
                futures.append(await producer.send(settings.facts.topic, record.value, key=record.key))
            except Exception as exc:  # refused before sending (too large, no metadata): count what got through
                acked = await asyncio.gather(*futures, return_exceptions=True)
                raise SendFailed(sum(not isinstance(a, BaseException) for a in acked), record, exc) from None
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await producer.stop()
    failed = [(r, e) for r, e in zip(records, results, strict=True) if isinstance(e, BaseException)]
    if failed:
        raise SendFailed(len(records) - len(failed), failed[0][0], failed[0][1])
