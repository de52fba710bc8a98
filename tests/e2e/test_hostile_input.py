"""Hostile input end to end, on both embedded brokers: the corpus of tests/fuzz/corpus.py produced with its
keys and headers into a real worker, and `slmstream dlq replay` against the DLQ it fills.

The worker must stay up, send every invalid message to the DLQ exactly once (with its reason and its bytes,
key and headers), enrich every valid one exactly once, and keep its memory bounded.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from unittest import mock

import aiokafka.producer.message_accumulator
import aiokafka.producer.producer
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.record import default_records
from faust.types.settings.settings import Settings as FaustSettings
from jsonschema import Draft202012Validator

from pipeline.cli.dlq import REPLAYED_FROM_HEADER, replay_dlq
from pipeline.ingest.validate import Rejection, validate
from pipeline.kafka_client import ensure_topics
from pipeline.output.records import DLQ_MAX_VALUE_BYTES, dlq_record
from pipeline.worker_process import WorkerProcess
from schemas import Event, Origin, load_schema
from tests.e2e.conftest import PARTITIONS, collect, read_raw, worker_settings
from tests.fuzz.corpus import MIB, Hostile, corpus

pytestmark = pytest.mark.e2e

PRODUCER_MAX_REQUEST = 8 * MIB  # ours: the corpus has messages of 1.1 MiB (aiokafka's default is 1 MiB)
# The worker's producer: Faust's default producer_max_request_size (pipeline/faust_app.py leaves it). A DLQ
# record bigger than this can never be sent, and the worker then stalls (see test_oversized_dlq_record...):
# the main tests leave those messages out.
WORKER_MAX_REQUEST = FaustSettings.producer_max_request_size.default
# noida-db refuses a message of 1 MiB or more (MessageSizeTooLargeError), even on a topic created with
# max.message.bytes=8 MiB; tansu takes 6 MB (test_broker_message_size_limits). So the 1 MiB corpus messages
# are only sent to tansu. (They are left out of the main tests anyway: their DLQ records are too big.)
NOIDA_MAX_VALUE = MIB - 64
SAMPLE_PER_CATEGORY = 75
RSS_LIMIT_KIB = 1536 * 1024


@dataclass(frozen=True, slots=True)
class Sent:
    item: Hostile
    partition: int
    offset: int

    @property
    def headers(self) -> list[tuple[str, bytes | None]]:
        return self.item.headers


def dlq_fits(item: Hostile) -> bool:
    """Whether the worker can send this message's DLQ record (an upper bound of its size)."""
    origin = Origin("ev-00000000", 0, 10**9, item.key, tuple(item.headers), 1)
    size = len(dlq_record("text_too_long", "m" * 100, origin, item.value)) + len(item.key or b"")
    return size + 1024 < WORKER_MAX_REQUEST


def hostile_sample(per_category: int | None) -> list[Hostile]:
    """The first `per_category` items of each category (all of them for None) whose DLQ record fits."""
    taken: Counter[str] = Counter()
    out = []
    for item in corpus():
        if not dlq_fits(item):
            continue
        if item.key is None and item.value is None:  # aiokafka refuses to send that: "Need at least one"
            item = item._replace(key=b"")
        if per_category is None or item.category == "valid" or taken[item.category] < per_category:
            taken[item.category] += 1
            out.append(item)
    return out


async def produce_items(bootstrap: str, topic: str, items: Sequence[Hostile]) -> list[Sent]:
    """Produce each item with its key and headers; returns where each one landed."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=PRODUCER_MAX_REQUEST
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, it.value, key=it.key, headers=it.headers) for it in items]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [Sent(it, md.partition, md.offset) for it, md in zip(items, metas, strict=True)]


def rss_kib(worker: WorkerProcess) -> tuple[int, int]:
    """(VmRSS, VmHWM) of the worker process, KiB."""
    assert worker.proc is not None
    fields = {}
    with open(f"/proc/{worker.proc.pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(rest.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def kept(value: bytes | None) -> bytes | None:
    """What a DLQ record carries of a value: all of it, or its first DLQ_MAX_VALUE_BYTES (then marked)."""
    return value if value is None else value[:DLQ_MAX_VALUE_BYTES]


def unb64(v: str | None) -> bytes | None:
    return None if v is None else base64.b64decode(v, validate=True)


def expected_outcome(sent: Sent, topic: str) -> Event | Rejection:
    """What the worker must make of it: the same validation, with the Origin the worker sees."""
    origin = Origin(topic, sent.partition, sent.offset, sent.item.key, tuple(sent.headers), timestamp_ms=1)
    return validate(sent.item.value, origin, worker_settings().input)  # the limits the worker runs with


def assert_worker_healthy(worker: WorkerProcess) -> None:
    assert worker.proc is not None and worker.proc.poll() is None, f"worker exited:\n{worker.log_tail()}"
    assert worker.ready(), "worker /health is not ready"
    log = worker.log_file.read_text(errors="replace")
    assert "Traceback" not in log, worker.log_tail(60)
    assert "send_failed" not in log and "delivery_failed" not in log, worker.log_tail(60)


def run_hostile(broker, topics, start_worker, items: list[Hostile]) -> None:
    if broker.engine == "noida":
        items = [it for it in items if len(it.value or b"") < NOIDA_MAX_VALUE]
    t0 = time.monotonic()
    worker = start_worker()
    rss_before, _ = rss_kib(worker)
    sent = asyncio.run(produce_items(broker.bootstrap, topics.events, items))
    t_sent = time.monotonic()

    expected_dlq: dict[tuple[int, int], tuple[Sent, str]] = {}
    expected_ids: Counter[str] = Counter()
    for s in sent:
        result = expected_outcome(s, topics.events)
        if isinstance(result, Rejection):
            expected_dlq[(s.partition, s.offset)] = (s, result.type)
        else:
            expected_ids[result.id] += 1
    n_valid, n_invalid = sum(expected_ids.values()), len(expected_dlq)
    got = asyncio.run(
        collect(
            broker.bootstrap,
            [topics.enriched, topics.dlq],
            {topics.enriched: n_valid, topics.dlq: n_invalid},
            timeout=120,
        )
    )
    t_done = time.monotonic()
    rss_after, rss_peak = rss_kib(worker)
    enriched, dlq = got[topics.enriched], got[topics.dlq]

    dlq_types = Counter(d["error"]["type"] for d in dlq)
    categories = Counter(it.category for it in items)
    print(
        f"\n[{broker.engine}] {len(items)} messages ({n_valid} valid, {n_invalid} invalid; "
        f"{len(categories)} categories, {sum(len(it.value or b'') for it in items) / MIB:.1f} MiB) "
        f"sent in {t_sent - t0:.1f}s incl. worker start; all out after {t_done - t_sent:.1f}s\n"
        f"[{broker.engine}] enriched {len(enriched)}, dlq {len(dlq)}: "
        + ", ".join(f"{k} {v}" for k, v in dlq_types.most_common())
        + f"\n[{broker.engine}] worker RSS {rss_before / 1024:.0f} MiB after start, {rss_after / 1024:.0f} MiB "
        f"at the end, peak {rss_peak / 1024:.0f} MiB"
    )

    # Every invalid message on the DLQ exactly once, with its reason and its bytes, key and headers.
    schema = Draft202012Validator(load_schema("dlq"))
    seen = Counter((d["original"]["partition"], d["original"]["offset"]) for d in dlq)
    assert {d["original"]["topic"] for d in dlq} <= {topics.events}
    missing = set(expected_dlq) - set(seen)
    assert not missing, f"{len(missing)} invalid messages not on the DLQ, e.g. " + ", ".join(
        f"{expected_dlq[m][0].item.category}: {expected_dlq[m][0].item.note}" for m in sorted(missing)[:5]
    )
    assert set(seen) == set(expected_dlq), "DLQ records for messages that are valid"
    assert max(seen.values()) == 1, f"DLQ duplicates: {[k for k, c in seen.items() if c > 1][:5]}"
    for d in dlq:
        o = d["original"]
        s, error_type = expected_dlq[(o["partition"], o["offset"])]
        where = f"{s.item.category} ({s.item.note[:60]})"
        assert d["error"]["type"] == error_type, where
        assert d["error"]["message"], where
        assert unb64(o["value_b64"]) == kept(s.item.value), where
        assert o.get("value_truncated", False) == (kept(s.item.value) != s.item.value), where
        assert unb64(o["key"]) == s.item.key, where
        assert [(n, unb64(v)) for n, v in o["headers"]] == s.headers, where
        errors = list(schema.iter_errors(d))
        assert not errors, f"{where}: {errors[0].message}"

    # Every valid one enriched exactly once.
    ids = Counter(d["id"] for d in enriched)
    assert ids == expected_ids, (
        f"enriched: {len(set(expected_ids) - set(ids))} missing, {len(set(ids) - set(expected_ids))} unexpected, "
        f"{sum(c - 1 for c in ids.values() if c > 1)} duplicates"
    )
    assert all(d["analysis"]["label"] for d in enriched)

    assert_worker_healthy(worker)
    assert rss_peak < RSS_LIMIT_KIB, f"worker peak RSS {rss_peak / 1024:.0f} MiB"


def test_hostile_sample(broker, topics, start_worker) -> None:
    """~75 hostile messages of each corpus category plus the valid events (about 1,700 messages)."""
    items = hostile_sample(SAMPLE_PER_CATEGORY)
    assert len({it.category for it in items}) == len({it.category for it in corpus()})
    assert sum(len(it.value or b"") > worker_settings().input.max_event_bytes for it in items) >= 20
    run_hostile(broker, topics, start_worker, items)


@pytest.mark.soak
def test_hostile_full_corpus(broker, topics, start_worker) -> None:
    """The whole corpus (but the messages whose DLQ record the worker cannot send, see below)."""
    run_hostile(broker, topics, start_worker, hostile_sample(None))


def test_broker_message_size_limits(broker, topics) -> None:
    """What each engine takes: tansu ~1.1 MiB messages, noida-db nothing from 1 MiB on."""

    async def send(size: int) -> str:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=PRODUCER_MAX_REQUEST)
        await producer.start()
        try:
            await (await producer.send(topics.events, b"x" * size, key=b"k"))
            return "ok"
        except MessageSizeTooLargeError:
            return "too large"
        finally:
            await producer.stop()

    got = {size: asyncio.run(send(size)) for size in (NOIDA_MAX_VALUE, MIB, 1_153_434)}
    if broker.engine == "tansu":
        assert got == {NOIDA_MAX_VALUE: "ok", MIB: "ok", 1_153_434: "ok"}
    else:
        assert got == {NOIDA_MAX_VALUE: "ok", MIB: "too large", 1_153_434: "too large"}


# ---- what the corpus found ---------------------------------------------------------------------------------
def _stalled_items(engine: str) -> list[Hostile]:
    big = [it for it in corpus() if it.value and len(it.value) >= MIB and it.category == "huge_strings"][:2]
    plain = Hostile(b"big", b"x" * 800_000, [("h", b"v")], "huge", frozenset({"too_large"}), "800 kB")
    return [plain] + (big if engine == "tansu" else [])


def test_oversized_dlq_record_does_not_stall_the_worker(broker, topics, start_worker) -> None:
    big = _stalled_items(broker.engine)
    before = Hostile(None, b'{"id":"before","text":"I was charged twice"}', [], "valid", frozenset(), "")
    after = Hostile(None, b'{"id":"after","text":"Where is my parcel?"}', [], "valid", frozenset(), "")
    bad_after = Hostile(b"k", b"not json", [], "x", frozenset(), "")
    worker = start_worker()
    try:
        sent = asyncio.run(produce_items(broker.bootstrap, topics.events, [before, *big, after, bad_after]))
        assert all(s.partition >= 0 for s in sent)
        got = asyncio.run(
            collect(
                broker.bootstrap,
                [topics.enriched, topics.dlq],
                {topics.enriched: 2, topics.dlq: len(big) + 1},
                timeout=10,
                grace=0.5,
            )
        )
        assert sorted(d["id"] for d in got[topics.enriched]) == ["after", "before"]
        values = sorted(unb64(d["original"]["value_b64"]) or b"" for d in got[topics.dlq])
        assert values == sorted([b"not json", *(kept(it.value) or b"" for it in big)])
        assert_worker_healthy(worker)
    finally:
        worker.kill()  # a stalled worker would hold the fixture's graceful stop for 20 s


class _NotUtf8Name(str):
    """A header name that encodes to bytes that are not UTF-8. Kafka carries header names as bytes, and
    producers such as librdkafka send any; aiokafka cannot, so this goes through aiokafka's pure-Python
    record builder, which calls .encode() on the name."""

    def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
        return b"\xff\xfebad-\xc0\x80"


async def produce_raw_header_names(bootstrap: str, topic: str, messages: list[tuple[bytes, list]]) -> None:
    builder = default_records._DefaultRecordBatchBuilderPy  # noqa: SLF001  aiokafka's pure-Python builder: the one that can write bad header names
    with ExitStack() as stack:
        for module in (aiokafka.producer.message_accumulator, aiokafka.producer.producer):
            stack.enter_context(mock.patch.object(module, "DefaultRecordBatchBuilder", builder))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        await producer.start()
        try:
            for value, headers in messages:  # one by one: each in its own batch
                await (await producer.send(topic, value, key=b"k", headers=headers))
        finally:
            await producer.stop()


ESCAPED_NAME = "\\xff\\xfebad-\\xc0\\x80"  # what the worker makes of _NotUtf8Name (pipeline/kafka_transport.py)


def test_header_name_not_utf8_does_not_crash_the_worker(broker, topics, start_worker) -> None:
    """A header name that is not UTF-8 used to crash aiokafka's record parser in Faust's fetcher (worker exit 1,
    and again after every restart). Now its batch is parsed again leniently: the bad bytes of the name become
    \\xNN escapes and the record goes the usual way -- enriched when valid, to the DLQ (with the escaped name)
    when not -- and the records after it flow."""
    worker = start_worker()
    odd = [(_NotUtf8Name("x"), b"1"), ("fine", b"2")]
    messages = [
        (b'{"id":"before","text":"I was charged twice"}', []),
        (b'{"id":"odd-header","text":"Where is my parcel?"}', odd),
        (b"odd header, not json", odd),
        (b'{"id":"after","text":"Please cancel my subscription"}', []),
        (b"not json", []),
    ]
    asyncio.run(produce_raw_header_names(broker.bootstrap, topics.events, messages))
    got = asyncio.run(
        collect(broker.bootstrap, [topics.enriched, topics.dlq], {topics.enriched: 3, topics.dlq: 2}, 30, 1.0)
    )
    assert worker.proc is not None and worker.proc.poll() is None, f"the worker crashed:\n{worker.log_tail()}"
    assert sorted(d["id"] for d in got[topics.enriched]) == ["after", "before", "odd-header"]
    dlq = {base64.b64decode(d["original"]["value_b64"]): d for d in got[topics.dlq]}
    assert sorted(dlq) == [b"not json", b"odd header, not json"]
    odd_dlq = dlq[b"odd header, not json"]
    assert odd_dlq["error"]["type"] == "not_json"
    assert [(n, unb64(v)) for n, v in odd_dlq["original"]["headers"]] == [(ESCAPED_NAME, b"1"), ("fine", b"2")]
    warnings = [line for line in worker.log_file.read_text().splitlines() if "header_name_not_utf8" in line]
    assert warnings, worker.log_tail()  # one per fetch that needed the lenient parse, with the offset it began at
    assert_worker_healthy(worker)


# ---- slmstream dlq replay ----------------------------------------------------------------------------------
REPLAY_MESSAGES = [
    Hostile(b"k1", b"not json at all", [("trace", b"\x00\xff"), ("", None)], "r", frozenset({"not_json"}), ""),
    Hostile(None, b'{"text": 5}', [], "r", frozenset({"wrong_type"}), ""),
    Hostile(b"", None, [("only-name", None)], "r", frozenset({"empty_message"}), ""),
    Hostile(b"\xff\xfe", b"\xc3\x28 bad utf-8", [("é", "ключ".encode())], "r", frozenset({"not_utf8"}), ""),
    Hostile(b"k5", b"[1, 2, 3]", [("a", b"1"), ("a", b"2")], "r", frozenset({"not_object"}), ""),
    Hostile(b"k6", b"{not json either", [], "r", frozenset({"not_json"}), ""),
    Hostile(b"k7", b'{"text": "ok", "ts": "yesterday"}', [("x", b"")], "r", frozenset({"bad_timestamp"}), ""),
]


def _message(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> tuple:
    return (key, value, tuple(headers))


def test_dlq_replay(broker, topics, start_worker) -> None:
    """Bad messages → worker → DLQ → replay → the original keys, values and headers, traceable to the DLQ."""
    bootstrap = broker.bootstrap
    worker = start_worker()
    valid = Hostile(None, b'{"id":"fine","text":"How do I reset my password?"}', [], "valid", frozenset(), "")
    asyncio.run(produce_items(bootstrap, topics.events, [*REPLAY_MESSAGES, valid]))
    n = len(REPLAY_MESSAGES)
    dlq = asyncio.run(read_raw(bootstrap, topics.dlq, n, timeout=60))
    assert len(dlq) == n
    originals = Counter(_message(m.key, m.value, m.headers) for m in REPLAY_MESSAGES)
    types = Counter(next(iter(m.expect)) for m in REPLAY_MESSAGES)
    assert Counter(orjson.loads(r.value)["error"]["type"] for r in dlq) == types

    # Not DLQ records, put there by someone else: skipped and counted.
    async def add_junk() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for junk in (b"junk", b'{"error": {"type": "not_json"}}', None):
                await (await producer.send(topics.dlq, junk, key=b"junk"))
        finally:
            await producer.stop()

    asyncio.run(add_junk())
    uid = uuid.uuid4().hex[:8]
    everything, only_not_json, limited = f"replay-all-{uid}", f"replay-nj-{uid}", f"replay-lim-{uid}"
    asyncio.run(ensure_topics(bootstrap, [everything, only_not_json, limited], PARTITIONS))

    dry = asyncio.run(replay_dlq(bootstrap, topics.dlq, everything, dry_run=True))
    assert dry.replayed == types and dry.invalid == 3 and dry.read == n + 3 and not dry.filtered

    t0 = time.monotonic()
    summary = asyncio.run(replay_dlq(bootstrap, topics.dlq, everything))
    took = time.monotonic() - t0
    assert summary.replayed == types and summary.invalid == 3 and not summary.limit_reached
    replayed = asyncio.run(read_raw(bootstrap, everything, n, timeout=30))
    assert len(replayed) == n  # nothing for the dry run, nothing for the junk
    dlq_refs = {f"{r.topic}:{r.partition}:{r.offset}" for r in dlq}
    refs = []
    for r in replayed:
        headers = list(r.headers)
        assert headers[-1][0] == REPLAYED_FROM_HEADER
        refs.append(headers[-1][1].decode())
        assert _message(r.key, r.value, headers[:-1]) in originals
    assert Counter(_message(r.key, r.value, list(r.headers)[:-1]) for r in replayed) == originals
    assert sorted(refs) == sorted(dlq_refs), "each replay names the DLQ record it came from"

    typed = asyncio.run(replay_dlq(bootstrap, topics.dlq, only_not_json, types=frozenset({"not_json"})))
    assert typed.replayed == {"not_json": 2} and sum(typed.filtered.values()) == n - 2
    got = asyncio.run(read_raw(bootstrap, only_not_json, 2, timeout=30))
    assert sorted(r.value for r in got) == sorted(m.value for m in REPLAY_MESSAGES if "not_json" in m.expect)

    capped = asyncio.run(replay_dlq(bootstrap, topics.dlq, limited, limit=3))
    assert sum(capped.replayed.values()) == 3 and capped.limit_reached
    assert len(asyncio.run(read_raw(bootstrap, limited, 3, timeout=30))) == 3

    # Round trip: replayed into the input topic, still bad, back on the DLQ, naming where they came from.
    asyncio.run(replay_dlq(bootstrap, topics.dlq, topics.events))
    again = asyncio.run(read_raw(bootstrap, topics.dlq, 2 * n + 3, timeout=60))
    second = [orjson.loads(r.value) for r in again if r.value and b'"original"' in r.value]
    second = [d for d in second if any(h[0] == REPLAYED_FROM_HEADER for h in d["original"]["headers"])]
    assert len(second) == n
    for d in second:
        name, ref = d["original"]["headers"][-1]
        assert name == REPLAYED_FROM_HEADER and unb64(ref).decode() in dlq_refs
    assert_worker_healthy(worker)
    print(f"\n[{broker.engine}] replay of {n} DLQ records (+3 junk) took {took:.2f}s")
