"""`slmstream label`: teach the classifier (README "Teaching the classifier").

    slmstream label ID LABEL                       the event ID (as in events.enriched) is a LABEL
    slmstream label --file FILE.jsonl              one feedback record a line (schemas/feedback.schema.json)
    slmstream label --new NAME --description TEXT  add a label, without restarting the workers

Each becomes a record on the feedback topic, keyed by its label; the command returns once the broker holds
them. Their shape is checked here first (a file with a bad line sends nothing and names the line); whether
the label and the id are known is the workers' call: bad feedback goes to the DLQ with its reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.markup import escape

from pipeline.cli.common import fail, settings_or_exit
from pipeline.cli.topics import BrokerOpt, security_kwargs_or_exit
from pipeline.config import InputSettings
from pipeline.ingest.validate import Rejection
from pipeline.kafka_client import bootstrap_servers, ensure_topics
from pipeline.learning.feedback import feedback_json, feedback_key, parse_feedback

console = Console(soft_wrap=True, highlight=False)


def checked(value: bytes, configured: Collection[str], limits: InputSettings) -> tuple[bytes, bytes] | Rejection:
    """(key, value) of a feedback record whose shape is right. The label of an example is not checked against
    the taxonomy here (it may have been added through feedback); a new label must not be a configured one."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        doc = None
    label = doc.get("label") if isinstance(doc, dict) else None
    new = isinstance(doc, dict) and "description" in doc
    known = set(configured) if new else (set(configured) | ({label} if isinstance(label, str) else set()))
    parsed = parse_feedback(value, known, limits)
    if isinstance(parsed, Rejection):
        return parsed
    return feedback_key(parsed.label), value


def records_from_lines(
    lines: Sequence[bytes], configured: Collection[str], limits: InputSettings
) -> tuple[list[tuple[bytes, bytes]], list[str]]:
    """The records of a JSONL file's non-blank lines, and a problem per bad line (`line N: reason`)."""
    records, problems = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        result = checked(line.strip(), configured, limits)
        if isinstance(result, Rejection):
            problems.append(f"line {n}: {result.type}: {result.message}")
        else:
            records.append(result)
    return records, problems


async def publish(
    records: Sequence[tuple[bytes, bytes]], topic: str, bootstrap: str, partitions: int, client_kwargs: dict[str, Any]
) -> None:
    await ensure_topics(bootstrap, [topic], partitions, **client_kwargs)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **client_kwargs)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def label(
    event_id: Annotated[str | None, typer.Argument(metavar="ID", help="An event id, as in events.enriched.")] = None,
    label_name: Annotated[str | None, typer.Argument(metavar="LABEL", help="Its right label.")] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", exists=True, dir_okay=False, help="Feedback records, one JSON object a line."),
    ] = None,
    new: Annotated[str | None, typer.Option("--new", help="Add a label with this name (needs --description).")] = None,
    description: Annotated[str | None, typer.Option(help="What the new label means (its zero-shot prototype).")] = None,
    by: Annotated[str | None, typer.Option(help="Who is teaching (kept with the example).")] = None,
    broker: BrokerOpt = None,
) -> None:
    """Teach the classifier: label an event, a file of feedback, or add a new label."""
    settings = settings_or_exit()
    configured = list(settings.labels)
    modes = sum(x is not None for x in (event_id, file, new))
    if modes != 1:
        fail("give ID LABEL, --file FILE.jsonl or --new NAME --description TEXT (one of them)", 2)
    if new is not None and description is None:
        fail("--new needs --description (what the label means: its zero-shot prototype)", 2)
    if description is not None and new is None:
        fail("--description goes with --new NAME", 2)
    if event_id is not None and label_name is None:
        fail("give the event's right LABEL after its ID", 2)
    if file is not None:
        lines = file.read_bytes().splitlines()
        records, problems = records_from_lines(lines, configured, settings.input)
        if problems:
            fail(f"{file}: nothing sent; fix these lines: " + "; ".join(problems[:20]), 1)
    else:
        if new is not None:
            value = feedback_json(new, description=description, by=by)
        else:
            assert label_name is not None
            value = feedback_json(label_name, id=event_id, by=by)
        result = checked(value, configured, settings.input)
        if isinstance(result, Rejection):
            fail(f"{result.type}: {result.message}", 1)
        records = [result]
    topic = settings.topics.feedback
    asyncio.run(
        publish(
            records,
            topic,
            bootstrap_servers(broker or settings.broker),
            settings.topics.partitions,
            security_kwargs_or_exit(settings),
        )
    )
    console.print(
        f"sent {len(records)} feedback record{'s' if len(records) != 1 else ''} to {escape(topic)}; "
        f"the workers learn within seconds (bad feedback goes to {escape(settings.topics.dlq)} with its reason)"
    )
