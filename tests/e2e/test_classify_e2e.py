"""Produce to Kafka, run real worker processes, read the output topics: on both embedded brokers."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from pathlib import Path

import jsonschema
import orjson
import pytest

from schemas import load_schema
from tests.e2e.conftest import collect, produce

DATA = Path(__file__).resolve().parents[2] / "pipeline" / "samples"
pytestmark = pytest.mark.e2e


def sample_events(n: int, tag: str) -> list[bytes]:
    lines = (DATA / "sample_events.jsonl").read_bytes().splitlines()[:n]
    out = []
    for line in lines:
        doc = orjson.loads(line)
        doc["id"] = f"{doc['id']}-{tag}"
        out.append(orjson.dumps(doc))
    return out


def malformed() -> list[bytes]:
    lines = [ln for ln in (DATA / "malformed_events.txt").read_bytes().splitlines() if ln.strip()]
    return lines + [b"\xff\xfe not utf-8 \xc3\x28", bytes(range(256)), b"{" * 5000 + b"}" * 5000]


def test_valid_and_malformed_events(broker, topics, start_worker) -> None:
    """N valid + M malformed in → exactly N enriched (right fields) + M DLQ records (with reason and bytes)."""
    valid, bad = sample_events(60, topics.uid), malformed()
    start_worker()
    values = valid + bad
    asyncio.run(produce(broker.bootstrap, topics.events, values))
    got = asyncio.run(
        collect(
            broker.bootstrap, [topics.enriched, topics.dlq], {topics.enriched: len(valid), topics.dlq: len(bad)}, 90
        )
    )
    enriched, dlq = got[topics.enriched], got[topics.dlq]

    assert sorted(d["id"] for d in enriched) == sorted(orjson.loads(v)["id"] for v in valid)
    enriched_schema = load_schema("enriched")
    for d in enriched:
        jsonschema.validate(d, enriched_schema)
        a = d["analysis"]
        assert a["label"] in a["scores"] or a["label"] == "unknown"
        assert abs(sum(a["scores"].values()) - 1) < 0.01
        assert a["model"]["name"] == "minilm-l6-int8" and a["model"]["hash"].startswith("sha256:")
        assert d["attrs"]["expected_label"]  # input fields pass through
    correct = sum(d["analysis"]["label"] == d["attrs"]["expected_label"] for d in enriched)
    assert correct >= 0.6 * len(enriched), f"only {correct}/{len(enriched)} classified as expected"

    assert len(dlq) == len(bad)
    dlq_schema = load_schema("dlq")
    for d in dlq:
        jsonschema.validate(d, dlq_schema)
    assert sorted(base64.b64decode(d["original"]["value_b64"]) for d in dlq) == sorted(bad)
    assert {d["original"]["topic"] for d in dlq} == {topics.events}
    types = Counter(d["error"]["type"] for d in dlq)
    assert types["not_utf8"] == 2 and types["not_json"] >= 5 and types["wrong_type"] >= 5, types


def test_restart_mid_stream_loses_nothing(broker, topics, start_worker) -> None:
    """Stop the worker (SIGTERM) while events flow, once it has enriched some of them; start a new one: every
    event gets exactly one enriched record. A graceful stop drains and commits (README, Guarantees): no
    duplicates."""
    valid = sample_events(400, topics.uid)  # 4 s at 100/s
    first_work = 32  # enriched records the first worker must have produced before it is stopped
    first = start_worker()
    done_by_first: list[dict] = []

    async def produce_and_restart() -> None:
        sending = asyncio.ensure_future(produce(broker.bootstrap, topics.events, valid, rate=100))
        # Wait (polling the output topic) until the first worker has done some of the work, then stop it.
        got = await collect(broker.bootstrap, [topics.enriched], {topics.enriched: first_work}, 90, grace=0)
        done_by_first.extend(got[topics.enriched])
        assert len(done_by_first) >= first_work, f"the first worker enriched only {len(done_by_first)} events"
        t_stop = time.monotonic()
        await asyncio.to_thread(first.stop, 30)  # graceful: drains, commits, leaves the group
        stop_s = time.monotonic() - t_stop
        assert stop_s < 30, f"graceful stop took {stop_s:.1f}s (SIGKILLed):\n{first.log_tail()}"
        await asyncio.to_thread(start_worker)
        await sending

    t0 = time.monotonic()
    asyncio.run(produce_and_restart())
    got = asyncio.run(collect(broker.bootstrap, [topics.enriched], {topics.enriched: len(valid)}, 120))
    ids = Counter(d["id"] for d in got[topics.enriched])
    expected = {orjson.loads(v)["id"] for v in valid}
    missing = expected - set(ids)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    assert set(ids) == expected
    duplicated = sorted(i for i, c in ids.items() if c > 1)
    # A graceful stop commits everything it acked: the next worker re-reads nothing.
    assert not duplicated, f"{len(duplicated)} events enriched twice after a graceful stop, e.g. {duplicated[:5]}"
    deferred = sum(d["analysis"]["deferred"] for d in got[topics.enriched])
    print(
        f"[{broker.engine}] restart: first worker enriched {len(done_by_first)} before its stop; {len(ids)} ids, "
        f"0 duplicates, {deferred} deferred, {time.monotonic() - t0:.1f}s"
    )
