"""Reference facts on a real broker: two workers in one group each read the whole compacted topic, an update
and a deletion published while they run reach both, a bad fact crashes neither, and a restarted worker
rebuilds its table from the topic. Facts are published with the CLI (`slmstream facts load / delete`).

Events carry `attrs.customer_id` (the join field) and are spread over every partition of `events`, so both
workers classify some of them; each worker's own /metrics says how many entities its table holds and how
many of its events found their facts.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.facts.reader import ensure_facts_topic
from pipeline.model.identity import IDENTITY
from schemas import load_schema
from tests.e2e.conftest import CONFIG, PARTITIONS, collect, produce, worker_settings
from tests.e2e.faults import wait_assigned

pytestmark = pytest.mark.e2e

CUSTOMERS = [f"c-{i}" for i in range(8)]
PLANS = {c: ("Business" if i % 2 else "Free") for i, c in enumerate(CUSTOMERS)}
SLMSTREAM = Path(sys.executable).with_name("slmstream")


def events(tag: str, per_customer: int) -> list[bytes]:
    return [
        orjson.dumps(
            {"id": f"{tag}-{c}-{n}", "text": f"I was charged twice for my order ({n}).", "attrs": {"customer_id": c}}
        )
        for n in range(per_customer)
        for c in CUSTOMERS
    ]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SLMSTREAM), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False
    )


def metric(worker, name: str, labels: str = "") -> float:
    m = re.search(rf"^{name}(?:_total)?{re.escape(labels)} (\S+)$", worker.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def test_two_workers_share_the_facts_keep_them_current_and_a_restart_rebuilds_them(
    broker, topics, start_worker, tmp_path: Path
) -> None:
    facts_topic = f"ev-{topics.uid}.facts"
    env = {
        "SLMSTREAM_CONFIG": str(CONFIG),
        "SLMSTREAM_BROKER": broker.url,
        "SLMSTREAM_FACTS__ENABLED": "true",
        "SLMSTREAM_FACTS__TOPIC": facts_topic,
        "SLMSTREAM_FACTS__JOIN_FIELD": "attrs.customer_id",
        # The join, not the model, is under test: the identity model starts and classifies at once.
        "SLMSTREAM_MODEL__ENCODER": IDENTITY,
        "SLMSTREAM_BATCHING__LATE_POLICY": "process",
    }
    asyncio.run(ensure_facts_topic(worker_settings(**env)))
    assert asyncio.run(topic_config(broker.bootstrap, facts_topic, "cleanup.policy")) == "compact"
    facts_file = tmp_path / "facts.jsonl"
    facts_file.write_text(
        "".join(orjson.dumps({"id": c, "facts": {"plan": p}}).decode() + "\n" for c, p in PLANS.items())
    )
    loaded = cli(env, "facts", "load", str(facts_file))
    assert loaded.returncode == 0, loaded.stderr
    assert f"published {len(CUSTOMERS)} facts" in loaded.stdout
    # A bad fact in the topic (not through the CLI, which refuses it): counted, never fatal.
    asyncio.run(produce_keyed(broker.bootstrap, facts_topic, b"c-bad", b"[1, 2]"))

    workers = [start_worker(**env), start_worker(**env)]  # ready = the table read to its end
    wait_assigned(workers, topics.events, PARTITIONS, 60)  # both classify: each owns partitions of events
    for w in workers:
        assert metric(w, "slmstream_facts_entries") == len(CUSTOMERS)
        assert metric(w, "slmstream_facts_rejected", '{reason="not_object"}') == 1

    first = events("a", 4)
    asyncio.run(produce(broker.bootstrap, topics.events, first))
    got = asyncio.run(collect(broker.bootstrap, [topics.enriched], {topics.enriched: len(first)}, 90))[topics.enriched]
    schema = load_schema("enriched")
    for d in got:
        jsonschema.validate(d, schema)
        c = d["attrs"]["customer_id"]
        assert d["facts"] == {"entity": c, "values": {"plan": PLANS[c]}}
    hits = [metric(w, "slmstream_facts_lookups", '{result="hit"}') for w in workers]
    assert all(h > 0 for h in hits), f"each worker classified some events with their facts: {hits}"

    # While they run: c-0 moves to Business, c-1 is deleted (a tombstone).
    update = tmp_path / "update.jsonl"
    update.write_text('{"id": "c-0", "facts": {"plan": "Enterprise"}}\n')
    assert cli(env, "facts", "load", str(update)).returncode == 0
    deleted = cli(env, "facts", "delete", "c-1")
    assert deleted.returncode == 0, deleted.stderr
    wait_for(lambda: all(metric(w, "slmstream_facts_entries") == len(CUSTOMERS) - 1 for w in workers), 30)

    second = events("b", 4)
    asyncio.run(produce(broker.bootstrap, topics.events, second))
    got = asyncio.run(collect(broker.bootstrap, [topics.enriched], {topics.enriched: len(first) + len(second)}, 90))[
        topics.enriched
    ]
    after = [d for d in got if d["id"].startswith("b-")]
    assert len({d["id"] for d in after}) == len(second)
    current = {**PLANS, "c-0": "Enterprise"}
    for d in after:
        c = d["attrs"]["customer_id"]
        if c == "c-1":
            assert "facts" not in d
        else:
            assert d["facts"]["values"] == {"plan": current[c]}
    assert all(metric(w, "slmstream_facts_lookups", '{result="hit"}') > h for w, h in zip(workers, hits, strict=True))

    # A restart reads the table again from the topic: the update and the deletion included.
    workers[0].stop(20)
    fresh = start_worker(**env)
    assert metric(fresh, "slmstream_facts_entries") == len(CUSTOMERS) - 1
    wait_assigned([workers[1], fresh], topics.events, PARTITIONS, 60)
    third = events("r", 4)
    asyncio.run(produce(broker.bootstrap, topics.events, third))
    total = len(first) + len(second) + len(third)
    got = asyncio.run(collect(broker.bootstrap, [topics.enriched], {topics.enriched: total}, 90))[topics.enriched]
    restarted = [d for d in got if d["id"].startswith("r-")]
    assert len({d["id"] for d in restarted}) == len(third)
    for d in restarted:
        c = d["attrs"]["customer_id"]
        assert d.get("facts", {}).get("values") == (None if c == "c-1" else {"plan": current[c]})
    assert metric(fresh, "slmstream_facts_lookups", '{result="hit"}') > 0

    # `slmstream tail` shows the topic's records by key, the tombstone too.
    tail = cli(env, "tail", facts_topic, "-n", "0", "--json")
    assert tail.returncode == 0, tail.stderr
    shown = [orjson.loads(line) for line in tail.stdout.splitlines()]
    assert {"key": "c-0", "value": {"plan": "Enterprise"}} in shown and {"key": "c-1", "value": None} in shown


async def topic_config(bootstrap: str, topic: str, name: str) -> str | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = {e[0]: e[1] for resource in response.resources for e in resource[4]}
    return entries.get(name)


async def produce_keyed(bootstrap: str, topic: str, key: bytes, value: bytes | None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s")
        time.sleep(0.2)
