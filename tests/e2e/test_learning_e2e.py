"""Learning from analysts with two workers in one group, on a real broker: feedback by id (half of it for
events the other worker classified), by text, a new label, and bad feedback; both workers converge on one head
version within seconds; a restarted worker restores that head from the store without training it.

Probe events go to every partition of `events` explicitly, so each round is labeled by both workers; a round
whose records all carry the same head version means both workers use that head.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import load_schema
from tests.e2e.conftest import PARTITIONS, collect, produce
from tests.e2e.test_summaries_e2e import samples

pytestmark = pytest.mark.e2e

LEARNING_ENV = {
    "SLMSTREAM_LEARNING__RETRAIN_QUIET_S": "0.5",
    "SLMSTREAM_LEARNING__RETRAIN_MAX_DELAY_S": "2",
    "SLMSTREAM_LEARNING__RESOLVE_TIMEOUT_S": "4",
    "SLMSTREAM_BATCHING__BUDGET_MS": "5000",  # a loaded machine: no event deferred, every probe enriched at once
}
PER_LABEL = 4
CONVERGE_S = 60.0  # generous for a busy 2-core machine; the measured time is printed


async def send_feedback(bootstrap: str, topic: str, docs: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, orjson.dumps(d), key=str(d["label"]).encode()) for d in docs]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def probe_round(bootstrap: str, topic: str, uid: str, n: int) -> list[str]:
    """One event to each partition; their ids."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    ids = [f"{uid}-probe-{n}-{p}" for p in range(PARTITIONS)]
    try:
        futures = [
            await producer.send(
                topic,
                orjson.dumps({"id": i, "text": "my parcel never arrived", "ts": int(time.time() * 1000)}),
                partition=p,
            )
            for p, i in enumerate(ids)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return ids


async def read_ids(bootstrap: str, topic: str, ids: set[str], timeout: float) -> dict[str, dict]:
    """The enriched records of `ids` (the latest of each), read from the start until all are there or `timeout`."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    found: dict[str, dict] = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not ids <= set(found):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    doc = orjson.loads(r.value)
                    if doc["id"] in ids:
                        found[doc["id"]] = doc
    finally:
        await consumer.stop()
    return found


def converge(broker, topics, since: float, expect_prefix: str, rounds: int = 40) -> tuple[str, float, list[dict]]:
    """Send probe rounds until one round is labeled by a single head version starting with `expect_prefix`."""
    versions: set[str | None] = set()
    for n in range(rounds):
        ids = asyncio.run(probe_round(broker.bootstrap, topics.events, topics.uid, n + int(since * 1000)))
        seen = asyncio.run(read_ids(broker.bootstrap, topics.enriched, set(ids), timeout=30.0))
        versions = {seen[i]["analysis"]["head"] for i in ids if i in seen}
        if len(seen) == len(ids) and len(versions) == 1:
            (version,) = versions
            if version is not None and version.startswith(expect_prefix):
                return version, time.monotonic() - since, [seen[i] for i in ids]
    raise AssertionError(f"no convergence on {expect_prefix}*: last versions {versions}")


def log_events(path: Path, event: str) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == event:
            out.append(doc)
    return out


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)  # noida-db wedges a group on rejoin (brokers.md)
def test_two_workers_converge_on_one_head_and_a_restart_restores_it(broker, topics, start_worker, tmp_path) -> None:
    w0 = start_worker(**LEARNING_ENV)
    w1 = start_worker(**LEARNING_ENV)
    texts = samples()
    labels = sorted(texts)
    events = []
    for label in labels:
        for j in range(PER_LABEL):
            events.append(
                {"id": f"{topics.uid}-{label}-{j}", "text": texts[label][j], "key": f"k{j}-{label}", "expect": label}
            )
    asyncio.run(
        produce(
            broker.bootstrap,
            topics.events,
            [orjson.dumps({k: v for k, v in e.items() if k != "expect"}) for e in events],
        )
    )
    got = asyncio.run(collect(broker.bootstrap, [topics.enriched], {topics.enriched: len(events)}, timeout=90))
    enriched = got[topics.enriched]
    assert {r["id"] for r in enriched} >= {e["id"] for e in events}
    for r in enriched:
        jsonschema.validate(r, load_schema("enriched"))
        assert r["analysis"]["head"] is None  # no feedback yet: zero-shot

    # Feedback: every event by id (each worker classified some: the others are looked up across workers),
    # one text, one new label with an example, and three bad ones.
    feedback = [{"id": e["id"], "label": e["expect"], "by": "e2e"} for e in events]
    feedback.append({"text": "Where is my refund for the broken blender?", "label": "refund_return"})
    feedback.append({"label": "warranty", "description": "A question about the warranty or a repair under guarantee."})
    feedback.append({"text": "Is my blender still under warranty after two years?", "label": "warranty"})
    bad = [
        {"id": "no-such-event", "label": "billing"},
        {"id": events[0]["id"], "label": "no_such_label"},
        {"label": "billing", "description": "exists already"},
    ]
    t0 = time.monotonic()
    asyncio.run(send_feedback(broker.bootstrap, topics.feedback, feedback + bad))
    examples = len(events) + 2
    version, seconds, records = converge(broker, topics, t0, f"head-{examples}-")
    print(f"[{broker.engine}] both workers on {version} {seconds:.1f}s after the feedback was sent")
    for r in records:
        jsonschema.validate(r, load_schema("enriched"))
        assert "warranty" in r["analysis"]["scores"]  # the new label, without a restart

    dlq = asyncio.run(collect(broker.bootstrap, [topics.dlq], {topics.dlq: 3}, timeout=30))[topics.dlq]
    for r in dlq:
        jsonschema.validate(r, load_schema("dlq"))
    reasons = sorted(r["error"]["type"] for r in dlq)
    assert reasons == ["label_exists", "unknown_id", "unknown_label"], reasons

    # Both trained the same head (deterministic); one restarted worker loads it from the store.
    w0.stop(30)
    w2 = start_worker(**LEARNING_ENV)
    swaps = log_events(w2.log_file, "head_swapped")
    assert [s["how"] for s in swaps][:1] == ["restored"] and swaps[0]["version"] == version, swaps
    again, seconds, _ = converge(broker, topics, time.monotonic(), version)
    assert again == version
    assert all(s["how"] != "trained" for s in log_events(w2.log_file, "head_swapped"))
    assert w1.exited() is False
