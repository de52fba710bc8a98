"""`slmstream dlq replay` end to end (tansu, a real worker): what the worker dead-letters comes back whole.

* model_error: the worker's model fails on one event (test-only hook SLMTEST_MODEL_FAIL_TOKEN,
  pipeline/model/faults.py), which goes to the DLQ after its attempts. The worker restarts without the fault,
  the DLQ is replayed into the input topic, and the event comes out enriched.
* A value over 512 KiB that is invalid (too_large): its DLQ record holds only the first 512 KiB. The replay
  reads the whole message back from the source topic at `original.offset` and sends it byte for byte (key
  and headers too); the worker rejects it again, and the new DLQ record names the whole value's size and hash.
* DLQ records whose value is cut and whose source record is gone, or is another message: refused with the
  reason, while the others are replayed; the command exits 1.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.dlq import REPLAYED_FROM_HEADER
from pipeline.model.faults import FAIL_TOKEN_ENV
from pipeline.output.records import DLQ_MAX_VALUE_BYTES, dlq_record
from schemas import Origin
from tests.e2e.conftest import MIB, ROOT, collect, read_raw

pytestmark = pytest.mark.e2e

POISON = "slmtest-poison-dlq-replay"  # the fault hook's token: a model call on a text holding it fails
BIG_KEY = b"big-key"
BIG_HEADERS = [("trace", b"\x00\xffid"), ("empty", None)]


def big_value() -> bytes:
    """A JSON event over the DLQ's 512 KiB, and invalid (over input.max_event_bytes): it goes to the DLQ cut."""
    return orjson.dumps({"id": "big", "text": "too long " * (DLQ_MAX_VALUE_BYTES // 8)})


async def send(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes, list]]) -> list[RecordMetadata]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 * MIB)
    await producer.start()
    try:
        return [await (await producer.send(topic, v, key=k, headers=h)) for k, v, h in messages]
    finally:
        await producer.stop()


def unb64(v: str | None) -> bytes | None:
    return None if v is None else base64.b64decode(v)


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_replay_after_recovery_enriches_and_sends_cut_values_whole(
    broker, topics, start_worker, tmp_path: Path
) -> None:
    bootstrap = broker.bootstrap
    big = big_value()
    assert len(big) > DLQ_MAX_VALUE_BYTES
    poison = orjson.dumps({"id": "poison", "text": f"Where is my parcel? {POISON}", "ts": int(time.time() * 1000)})

    # 1. A worker whose model fails on the poison event; the big event is refused before any model work.
    worker = start_worker(**{FAIL_TOKEN_ENV: POISON})
    meta_poison, meta_big = asyncio.run(
        send(bootstrap, topics.events, [(b"p", poison, []), (BIG_KEY, big, BIG_HEADERS)])
    )
    got = asyncio.run(collect(bootstrap, [topics.dlq, topics.enriched], {topics.dlq: 2}, timeout=90, grace=0.5))
    by_type = {d["error"]["type"]: d for d in got[topics.dlq]}
    assert sorted(by_type) == ["model_error", "too_large"], got[topics.dlq]
    assert not got[topics.enriched]
    assert unb64(by_type["model_error"]["original"]["value_b64"]) == poison
    cut = by_type["too_large"]["original"]
    assert cut["value_truncated"] is True and cut["value_bytes"] == len(big)
    assert unb64(cut["value_b64"]) == big[:DLQ_MAX_VALUE_BYTES]
    assert (cut["partition"], cut["offset"]) == (meta_big.partition, meta_big.offset)

    # 2. Two cut DLQ records the replay must refuse: one whose source record is gone, one whose source offset
    #    holds another message (the poison event).
    gone = Origin(topics.events, meta_big.partition, 1_000_000, key=BIG_KEY)
    other = Origin(topics.events, meta_poison.partition, meta_poison.offset, key=BIG_KEY)
    forged = [(None, dlq_record("too_large", "forged", origin, big), []) for origin in (gone, other)]
    asyncio.run(send(bootstrap, topics.dlq, forged))

    # 3. The model recovers: the worker restarts without the fault.
    worker.stop(20)
    start_worker()

    # 4. Replay the whole DLQ into the input topic.
    result = CliRunner().invoke(
        app,
        ["dlq", "replay", "--broker", broker.url, "--from-topic", topics.dlq, "--to-topic", topics.events],
        env={"SLMSTREAM_CONFIG": str(ROOT / "config" / "slmstream.yaml")},
    )
    assert result.exit_code == 1, result.output  # 1: two records were refused, after the others were sent
    assert "sent 2 messages" in result.output, result.output
    assert "1 cut in their DLQ record: read whole from their source topic" in result.output, result.output
    refusals = [ln for ln in result.output.splitlines() if ln.startswith("slmstream dlq replay:")]
    assert len(refusals) == 2, result.output
    assert any(f"gone from {topics.events}:{meta_big.partition}:1000000" in r for r in refusals), refusals
    assert any(
        f"the record at {topics.events}:{meta_poison.partition}:{meta_poison.offset} is another message" in r
        for r in refusals
    ), refusals

    # 5. The model_error event comes out enriched; the big one is sent whole, and is dead-lettered again.
    got = asyncio.run(
        collect(bootstrap, [topics.dlq, topics.enriched], {topics.dlq: 5, topics.enriched: 1}, timeout=90)
    )
    assert [d["id"] for d in got[topics.enriched]] == ["poison"], got[topics.enriched]
    assert got[topics.enriched][0]["analysis"]["label"]
    again = [
        d
        for d in got[topics.dlq]
        if d["error"]["message"] != "forged" and any(n == REPLAYED_FROM_HEADER for n, _ in d["original"]["headers"])
    ]
    assert len(again) == 1 and again[0]["error"]["type"] == "too_large", got[topics.dlq]
    o = again[0]["original"]
    assert o["value_sha256"] == hashlib.sha256(big).hexdigest() and o["value_bytes"] == len(big)

    events = asyncio.run(read_raw(bootstrap, topics.events, 4, timeout=30, grace=0))
    replayed = [r for r in events if any(n == REPLAYED_FROM_HEADER for n, _ in r.headers)]
    big_again = [r for r in replayed if r.key == BIG_KEY]
    assert len(replayed) == 2 and len(big_again) == 1
    assert big_again[0].value == big  # every byte, not the DLQ record's first 512 KiB
    assert list(big_again[0].headers)[:-1] == BIG_HEADERS
    assert [r.value for r in replayed if r.key != BIG_KEY] == [poison]
