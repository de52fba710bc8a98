"""pipeline/batching/scheduler.py: BatchScheduler with a fake model worker, a fake sink and a fake clock.

The sink hands back an asyncio.Future per record that the test resolves, standing in for the broker's ack.
Every wait is bounded, so a scheduler bug fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from pipeline.batching.scheduler import MODEL_ATTEMPTS, BatchScheduler, Rejected, Work
from pipeline.config import InputSettings, Settings
from pipeline.ingest.validate import validate
from pipeline.output.observers import Observer
from pipeline.output.records import ORIGIN_HEADER, ORIGIN_TS_HEADER, Classification, ModelInfo, deferred_headers
from schemas import Event, Origin, load_schema

T0 = 1_795_812_754.0  # the fake clock's start, wall-clock seconds
LABELS = {
    "billing": {"description": "a charge or an invoice"},
    "shipping": {"description": "a delivery or a package"},
}
ENRICHED = Draft202012Validator(load_schema("enriched"))
DLQ = Draft202012Validator(load_schema("dlq"))
WAIT_S = 2.0


# ---- fakes -------------------------------------------------------------------------------------------------
class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.pauses: list[float] = []  # what the scheduler's outbox slept for (retry back-off): no real time

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await asyncio.sleep(0)


@dataclass
class FakeClassifier:
    info: ModelInfo
    names: list[str] = field(default_factory=lambda: list(LABELS))


class FakeWorker:
    """ModelWorker-like: `.classifier.info`, `.classifier.names` and `async classify(texts)`."""

    def __init__(self, name: str = "fake-primary", *, fail_first: int = 0, seconds: float = 0.004) -> None:
        self.classifier = FakeClassifier(ModelInfo(name, f"sha256:{name}"))
        self.fail_first = fail_first  # this many calls raise; -1: every call raises
        self.seconds = seconds
        self.calls: list[list[str]] = []

    async def classify(self, texts: list[str]) -> tuple[list[Classification], float]:
        self.calls.append(list(texts))
        if self.fail_first < 0 or len(self.calls) <= self.fail_first:
            raise RuntimeError(f"{self.classifier.info.name} exploded")
        out = []
        for t in texts:
            label = "billing" if "charge" in t else "shipping"
            other = "shipping" if label == "billing" else "billing"
            out.append(Classification(label, 0.9, {label: 0.9, other: 0.1}))
        return out, self.seconds


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None
    future: asyncio.Future[Any]

    def doc(self) -> dict[str, Any]:
        return orjson.loads(self.value)


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[Sent] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append(Sent(topic, key, value, headers, fut))
        return fut

    def ack_all(self) -> None:
        for s in self.sent:
            if not s.future.done():
                s.future.set_result(None)


class Ack:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


# ---- helpers -----------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings built here depend on nothing but their arguments: no YAML file, no SLMSTREAM_* env vars."""
    for name in list(os.environ):
        if name.startswith("SLMSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(tmp_path / "none.yaml"))


def make_settings(**batching: Any) -> Settings:
    b = {"budget_ms": 250, "max_batch": 4, "max_wait_ms": 0, "queue_limit": 16, "late_policy": "defer", **batching}
    s = Settings(labels=LABELS, batching=b, taxonomy_version="tax-1")
    assert s.batching.budget_ms == b["budget_ms"]  # the defaults did not come from a YAML file
    return s


def make_work(
    clock: Clock, text: str, *, id: str | None = "evt-1", age_s: float = 0.0, offset: int = 42
) -> tuple[Work, Ack]:
    doc: dict[str, Any] = {"text": text, "ts": int(round((clock.now - age_s) * 1000)), "attrs": {"n": offset}}
    if id is not None:
        doc["id"] = id
    raw = orjson.dumps(doc)
    origin = Origin("events", 1, offset, key=b"cust-1", headers=(("trace", b"t-1"),), timestamp_ms=1_000_000_000_000)
    event = validate(raw, origin, InputSettings())
    assert isinstance(event, Event)
    ack = Ack()
    return Work(event, raw, ack), ack


async def eventually(cond: Callable[[], bool], task: asyncio.Task[Any] | None = None, timeout: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if task is not None and task.done():
            task.result()  # surfaces the scheduler's exception
            raise AssertionError("the scheduler stopped")
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


async def settle() -> None:
    """Give the scheduler plenty of chances to (wrongly) act."""
    for _ in range(20):
        await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def running(scheduler: BatchScheduler) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(scheduler.run())
    try:
        yield task
        assert not task.done(), "run() must keep running"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for d in list(scheduler.outbox._in_flight):  # noqa: SLF001  cancel what a test left in flight
            d.cancel()


def build(
    settings: Settings,
    primary: FakeWorker | None = None,
    fallback: FakeWorker | None = None,
    observers: Sequence[Observer] = (),
) -> tuple[BatchScheduler, FakeWorker, FakeSink, Clock]:
    primary = primary or FakeWorker()
    sink, clock = FakeSink(), Clock()
    sched = BatchScheduler(
        settings,
        primary,  # type: ignore[arg-type]
        fallback,  # type: ignore[arg-type]
        sink,
        observers=observers,
        clock=clock,
        sleep=clock.sleep,
    )
    return sched, primary, sink, clock


# ---- (a) enriched, acked after the broker has it -----------------------------------------------------------
async def test_event_is_enriched_and_acked_only_after_the_sink_resolves() -> None:
    settings = make_settings()
    sched, primary, sink, clock = build(settings)
    work, ack = make_work(clock, "why is there a charge on my card", id="evt-7")
    async with running(sched) as task:
        await asyncio.wait_for(sched.submit(work), WAIT_S)
        await eventually(lambda: len(sink.sent) == 1, task)
        await settle()
        assert ack.calls == 0  # the broker has not confirmed yet
        sent = sink.sent[0]
        assert sent.topic == "events.enriched"
        assert sent.key == b"evt-7"
        doc = sent.doc()
        assert not list(ENRICHED.iter_errors(doc))
        assert doc["id"] == "evt-7"
        assert doc["text"] == "why is there a charge on my card"
        assert doc["ts"] == int(T0 * 1000)
        assert doc["attrs"] == {"n": 42}
        a = doc["analysis"]
        assert a["label"] == "billing"
        assert a["score"] == 0.9
        assert a["model"] == {"name": "fake-primary", "hash": "sha256:fake-primary"}
        assert a["taxonomy_version"] == "tax-1"
        assert (a["deadline_met"], a["degraded"], a["deferred"]) == (True, False, False)
        assert a["latency_ms"]["model"] == 4.0
        assert primary.calls == [["why is there a charge on my card"]]

        sent.future.set_result(None)
        await eventually(lambda: ack.calls == 1, task)
        await settle()
        assert ack.calls == 1
        assert len(sink.sent) == 1


async def test_async_ack_and_a_batch_of_several() -> None:
    settings = make_settings(max_batch=4)
    sched, primary, sink, clock = build(settings)
    acked: list[str] = []

    works = []
    for i in range(3):
        work, _ = make_work(clock, f"package {i} lost", id=f"evt-{i}", offset=i)

        async def ack(i: int = i) -> None:
            await asyncio.sleep(0)
            acked.append(f"evt-{i}")

        work.ack = ack
        works.append(work)
    async with running(sched) as task:
        for w in works:  # queued together: one batch
            await sched.submit(w)
        await eventually(lambda: len(sink.sent) == 3, task)
        assert primary.calls == [["package 0 lost", "package 1 lost", "package 2 lost"]]
        assert [s.key for s in sink.sent] == [b"evt-0", b"evt-1", b"evt-2"]
        assert all(s.doc()["analysis"]["label"] == "shipping" for s in sink.sent)
        sink.sent[1].future.set_result(None)
        await settle()
        assert acked == []  # acks go in order: evt-0's record is not confirmed yet
        sink.ack_all()
        await eventually(lambda: len(acked) == 3, task)
        assert acked == ["evt-0", "evt-1", "evt-2"]


# ---- (b)-(d) late policies ---------------------------------------------------------------------------------
async def test_defer_sends_a_late_event_to_the_deferred_topic() -> None:
    settings = make_settings(late_policy="defer")
    sched, primary, sink, clock = build(settings)
    work, ack = make_work(clock, "where is my package", id=None, age_s=10.0)
    async with running(sched) as task:
        await sched.submit(work)
        await eventually(lambda: len(sink.sent) == 1, task)
        sent = sink.sent[0]
        assert sent.topic == "events.deferred"
        assert sent.value == work.raw  # the original bytes, not a re-encoding
        assert sent.key == b"cust-1"
        assert sent.headers == deferred_headers(work.event.origin)
        assert dict(sent.headers)[ORIGIN_HEADER] == b"events:1:42"
        assert dict(sent.headers)[ORIGIN_TS_HEADER] == b"1000000000000"
        assert dict(sent.headers)["trace"] == b"t-1"
        await settle()
        assert primary.calls == []  # not classified
        assert ack.calls == 0
        sent.future.set_result(None)
        await eventually(lambda: ack.calls == 1, task)
        assert len(sink.sent) == 1


async def test_process_classifies_a_late_event_with_deadline_missed() -> None:
    settings = make_settings(late_policy="process")
    sched, primary, sink, clock = build(settings)
    late, late_ack = make_work(clock, "a charge I do not know", id="late", age_s=10.0)
    fresh, fresh_ack = make_work(clock, "a lost package", id="fresh", offset=43)
    async with running(sched) as task:
        await sched.submit(late)
        await sched.submit(fresh)
        await eventually(lambda: len(sink.sent) == 2, task)
        by_id = {s.doc()["id"]: s.doc() for s in sink.sent}
        assert all(s.topic == "events.enriched" for s in sink.sent)
        assert by_id["late"]["analysis"]["deadline_met"] is False
        assert by_id["late"]["analysis"]["label"] == "billing"
        assert by_id["late"]["analysis"]["degraded"] is False
        assert by_id["late"]["analysis"]["latency_ms"]["total"] >= 10_000
        assert by_id["fresh"]["analysis"]["deadline_met"] is True
        assert sorted(t for call in primary.calls for t in call) == ["a charge I do not know", "a lost package"]
        sink.ack_all()
        await eventually(lambda: late_ack.calls == 1 and fresh_ack.calls == 1, task)


async def test_degrade_sends_late_events_to_the_fallback_model() -> None:
    settings = make_settings(late_policy="degrade")
    fallback = FakeWorker("fake-fallback")
    sched, primary, sink, clock = build(settings, fallback=fallback)
    late, late_ack = make_work(clock, "a charge I do not know", id="late", age_s=10.0)
    fresh, fresh_ack = make_work(clock, "a lost package", id="fresh", offset=43)
    async with running(sched) as task:
        await sched.submit(late)
        await sched.submit(fresh)
        await eventually(lambda: len(sink.sent) == 2, task)
        by_id = {s.doc()["id"]: s.doc() for s in sink.sent}
        for doc in by_id.values():
            assert not list(ENRICHED.iter_errors(doc))
        assert primary.calls == [["a lost package"]]
        assert fallback.calls == [["a charge I do not know"]]
        assert by_id["late"]["analysis"]["degraded"] is True
        assert by_id["late"]["analysis"]["model"]["name"] == "fake-fallback"
        assert by_id["late"]["analysis"]["deadline_met"] is False
        assert by_id["fresh"]["analysis"]["degraded"] is False
        assert by_id["fresh"]["analysis"]["model"]["name"] == "fake-primary"
        sink.ack_all()
        await eventually(lambda: late_ack.calls == 1 and fresh_ack.calls == 1, task)


def test_degrade_without_fallback_is_refused() -> None:
    with pytest.raises(ValueError, match="fallback"):
        BatchScheduler(make_settings(late_policy="degrade"), FakeWorker(), None, FakeSink())  # type: ignore[arg-type]


# ---- (e) model failures ------------------------------------------------------------------------------------
async def test_model_failing_every_time_sends_the_batch_to_the_dlq() -> None:
    settings = make_settings()
    sched, primary, sink, clock = build(settings, primary=FakeWorker(fail_first=-1))
    w1, a1 = make_work(clock, "a charge", id="e1", offset=1)
    w2, a2 = make_work(clock, "a package", id="e2", offset=2)
    async with running(sched) as task:
        await sched.submit(w1)
        await sched.submit(w2)
        await eventually(lambda: len(sink.sent) == 2, task)
        assert len(primary.calls) == MODEL_ATTEMPTS == 3
        for sent, work in zip(sink.sent, (w1, w2), strict=True):
            assert sent.topic == "events.dlq"
            assert sent.key == b"cust-1"
            doc = sent.doc()
            assert not list(DLQ.iter_errors(doc))
            assert doc["error"]["type"] == "model_error"
            assert "fake-primary" in doc["error"]["message"]
            assert "exploded" in doc["error"]["message"]
            assert base64.b64decode(doc["original"]["value_b64"]) == work.raw
            assert doc["original"]["offset"] == work.event.origin.offset
        await settle()
        assert (a1.calls, a2.calls) == (0, 0)
        sink.ack_all()
        await eventually(lambda: a1.calls == 1 and a2.calls == 1, task)
        await settle()
        assert len(primary.calls) == 3  # no more attempts


async def test_model_failing_once_is_retried() -> None:
    settings = make_settings()
    sched, primary, sink, clock = build(settings, primary=FakeWorker(fail_first=1))
    work, ack = make_work(clock, "a charge", id="e1")
    async with running(sched) as task:
        await sched.submit(work)
        await eventually(lambda: len(sink.sent) == 1, task)
        assert primary.calls == [["a charge"], ["a charge"]]
        assert sink.sent[0].topic == "events.enriched"
        assert sink.sent[0].doc()["analysis"]["label"] == "billing"
        sink.ack_all()
        await eventually(lambda: ack.calls == 1, task)


async def test_failed_send_is_retried_not_dropped() -> None:
    settings = make_settings()
    sched, primary, sink, clock = build(settings)
    real_send = sink.send
    failures = [RuntimeError("broker unreachable")]

    async def flaky_send(*args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        if failures:
            raise failures.pop()
        return await real_send(*args, **kwargs)

    sink.send = flaky_send  # type: ignore[method-assign]
    work, ack = make_work(clock, "a charge", id="e1")
    async with running(sched) as task:
        await sched.submit(work)
        await eventually(lambda: len(sink.sent) == 1, task)
        assert clock.pauses == [0.1]  # one back-off before the second try
        assert sink.sent[0].topic == "events.enriched"
        sink.ack_all()
        await eventually(lambda: ack.calls == 1, task)


async def test_broker_refusal_is_resent_before_acking() -> None:
    settings = make_settings()
    sched, primary, sink, clock = build(settings)
    work, ack = make_work(clock, "a charge", id="e1")
    async with running(sched) as task:
        await sched.submit(work)
        await eventually(lambda: len(sink.sent) == 1, task)
        sink.sent[0].future.set_exception(RuntimeError("NOT_LEADER_FOR_PARTITION"))
        await eventually(lambda: len(sink.sent) == 2, task)
        assert clock.pauses == [0.5]  # one pause before handing it off again
        assert sink.sent[1].value == sink.sent[0].value
        assert ack.calls == 0
        sink.sent[1].future.set_result(None)
        await eventually(lambda: ack.calls == 1, task)
        assert len(primary.calls) == 1  # resent, not reclassified


# ---- (f) back-pressure -------------------------------------------------------------------------------------
async def test_submit_blocks_at_queue_limit_until_a_delivery_is_acked() -> None:
    settings = make_settings(queue_limit=2, max_batch=2)
    sched, primary, sink, clock = build(settings)
    (w1, a1), (w2, a2), (w3, a3) = (make_work(clock, f"package {i}", id=f"e{i}", offset=i) for i in (1, 2, 3))
    async with running(sched) as task:
        await asyncio.wait_for(sched.submit(w1), WAIT_S)
        await asyncio.wait_for(sched.submit(w2), WAIT_S)
        third = asyncio.create_task(sched.submit(w3))
        await eventually(lambda: len(sink.sent) == 2, task)
        await settle()
        assert not third.done()  # two events held (in flight): no room for a third
        sink.sent[0].future.set_result(None)
        await eventually(lambda: a1.calls == 1, task)
        await asyncio.wait_for(third, WAIT_S)
        await eventually(lambda: len(sink.sent) == 3, task)
        assert sink.sent[2].key == b"e3"
        sink.ack_all()
        await eventually(lambda: a2.calls == 1 and a3.calls == 1, task)


async def test_rejects_count_towards_the_queue_limit() -> None:
    settings = make_settings(queue_limit=1, max_batch=1)
    sched, primary, sink, clock = build(settings)
    origin = Origin("events", 0, 9)
    first_ack, second_ack = Ack(), Ack()
    async with running(sched) as task:
        await asyncio.wait_for(sched.reject("not_json", "bad", origin, b"{", first_ack), WAIT_S)
        second = asyncio.create_task(sched.reject("not_json", "bad", origin, b"{", second_ack))
        await settle()
        assert not second.done()
        sink.ack_all()
        await asyncio.wait_for(second, WAIT_S)
        sink.ack_all()
        await eventually(lambda: first_ack.calls == 1 and second_ack.calls == 1, task)


# ---- (g) deferred lane -------------------------------------------------------------------------------------
async def test_deferred_lane_is_classified_when_the_main_lane_is_empty() -> None:
    settings = make_settings()
    sched, primary, sink, clock = build(settings)
    work, ack = make_work(clock, "old charge", id="d1", age_s=3600.0)
    async with running(sched) as task:
        await asyncio.wait_for(sched.submit_deferred(work), WAIT_S)
        await eventually(lambda: len(sink.sent) == 1, task)
        sent = sink.sent[0]
        assert sent.topic == "events.enriched"
        doc = sent.doc()
        assert not list(ENRICHED.iter_errors(doc))
        assert doc["id"] == "d1"
        assert doc["analysis"]["deferred"] is True
        assert doc["analysis"]["degraded"] is False
        assert doc["analysis"]["label"] == "billing"
        assert primary.calls == [["old charge"]]
        await settle()
        assert ack.calls == 0
        sent.future.set_result(None)
        await eventually(lambda: ack.calls == 1, task)


async def test_main_lane_goes_before_the_deferred_lane() -> None:
    settings = make_settings()
    sched, primary, sink, clock = build(settings)
    deferred, _ = make_work(clock, "deferred package", id="d1", age_s=3600.0, offset=1)
    main, _ = make_work(clock, "main charge", id="m1", offset=2)
    async with running(sched) as task:
        await sched.submit_deferred(deferred)
        await sched.submit(main)
        await eventually(lambda: len(sink.sent) == 2, task)
        assert primary.calls == [["main charge"], ["deferred package"]]
        assert [s.doc()["analysis"]["deferred"] for s in sink.sent] == [False, True]


async def test_deferred_lane_waits_while_a_main_batch_is_due_soon() -> None:
    # The main event may wait 1 ms (max_wait); a deferred batch of one is estimated at 9 ms (the ServiceTime
    # prior), so it does not fit in the slack and must not run before the main batch.
    settings = make_settings(budget_ms=10_000, max_wait_ms=1, max_batch=4)
    sched, primary, sink, clock = build(settings)
    main, _ = make_work(clock, "main charge", id="m1", offset=2)
    deferred, _ = make_work(clock, "deferred package", id="d1", age_s=3600.0, offset=1)
    async with running(sched) as task:
        await sched.submit(main)
        await sched.submit_deferred(deferred)
        await settle()
        assert primary.calls == []  # the fake clock has not moved: the main batch is not due yet
        clock.now += 0.001
        await eventually(lambda: len(sink.sent) == 2, task)
        assert primary.calls == [["main charge"], ["deferred package"]]


async def test_deferred_lane_uses_idle_time_before_a_main_batch_is_due() -> None:
    # With 100 ms of slack before the main batch is due, a deferred batch (9 ms) runs first.
    settings = make_settings(budget_ms=10_000, max_wait_ms=100, max_batch=4)
    sched, primary, sink, clock = build(settings)
    main, _ = make_work(clock, "main charge", id="m1", offset=2)
    deferred, _ = make_work(clock, "deferred package", id="d1", age_s=3600.0, offset=1)
    async with running(sched) as task:
        await sched.submit(main)
        await sched.submit_deferred(deferred)
        await eventually(lambda: len(sink.sent) == 1, task)
        assert primary.calls == [["deferred package"]]
        assert sink.sent[0].doc()["analysis"]["deferred"] is True
        await settle()
        assert len(primary.calls) == 1  # main still waits for its max_wait
        clock.now += 0.1
        await eventually(lambda: len(sink.sent) == 2, task)
        assert primary.calls[1] == ["main charge"]


# ---- (h) rejects -------------------------------------------------------------------------------------------
async def test_reject_writes_a_dlq_record_and_acks_after_it_is_stored() -> None:
    settings = make_settings()
    sched, primary, sink, clock = build(settings)
    origin = Origin("events", 2, 77, key=b"k", headers=(("h", b"1"),), timestamp_ms=1_795_812_754_000)
    raw = b'{"text": 42}'
    ack = Ack()
    async with running(sched) as task:
        await asyncio.wait_for(sched.reject("wrong_type", "`text` must be a string", origin, raw, ack), WAIT_S)
        assert len(sink.sent) == 1
        sent = sink.sent[0]
        assert sent.topic == "events.dlq"
        assert sent.key == b"k"
        doc = sent.doc()
        assert not list(DLQ.iter_errors(doc))
        assert doc["error"] == {"type": "wrong_type", "message": "`text` must be a string"}
        o = doc["original"]
        assert base64.b64decode(o["value_b64"]) == raw
        assert (o["topic"], o["partition"], o["offset"]) == ("events", 2, 77)
        assert o["headers"] == [["h", base64.b64encode(b"1").decode()]]
        await settle()
        assert ack.calls == 0
        sent.future.set_result(None)
        await eventually(lambda: ack.calls == 1, task)
        assert primary.calls == []


async def test_drain_waits_for_every_delivery() -> None:
    settings = make_settings()
    sched, primary, sink, clock = build(settings)
    work, ack = make_work(clock, "a charge", id="e1")
    async with running(sched) as task:
        await sched.submit(work)
        await eventually(lambda: len(sink.sent) == 1, task)
        drain = asyncio.create_task(sched.drain())
        await settle()
        assert not drain.done()
        sink.ack_all()
        await asyncio.wait_for(drain, WAIT_S)
        assert ack.calls == 1


@pytest.mark.parametrize("with_run", [False, True], ids=["run-stopped", "run-going"])
async def test_drain_batches_what_waits_at_once_and_finishes_it(with_run: bool) -> None:
    # max_wait 10 s and a 10 s budget: nothing is due while the fake clock stands still, yet drain finishes it.
    settings = make_settings(budget_ms=10_000, max_wait_ms=10_000, max_batch=4)
    sched, primary, sink, clock = build(settings)
    (w1, a1), (w2, a2) = (make_work(clock, f"charge {i}", id=f"m{i}", offset=i) for i in (1, 2))
    d1, ad = make_work(clock, "old package", id="d1", age_s=3600.0, offset=3)
    await sched.submit(w1)
    await sched.submit(w2)
    await sched.submit_deferred(d1)
    async with contextlib.AsyncExitStack() as stack:
        task = await stack.enter_async_context(running(sched)) if with_run else None
        if with_run:
            await eventually(lambda: len(sink.sent) == 1, task)  # the deferred batch fits the idle time
        drain = asyncio.create_task(sched.drain())
        await eventually(lambda: len(sink.sent) == 3, task)
        await settle()
        assert not drain.done()  # the results are not stored yet
        assert (a1.calls, a2.calls, ad.calls) == (0, 0, 0)
        sink.ack_all()
        await asyncio.wait_for(drain, WAIT_S)
        assert (a1.calls, a2.calls, ad.calls) == (1, 1, 1)
        assert sorted(map(tuple, primary.calls)) == [("charge 1", "charge 2"), ("old package",)]
        assert sched._held == 0  # noqa: SLF001  the back-pressure count itself, not exposed


async def test_a_record_that_can_never_be_sent_stops_the_loop_loudly() -> None:
    class TooLarge(Exception):
        retriable = False

    settings = make_settings()
    sched, primary, sink, clock = build(settings)

    async def refuse(*args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        raise TooLarge("record too large")

    sink.send = refuse  # type: ignore[method-assign]
    work, ack = make_work(clock, "a charge", id="e1")
    task = asyncio.create_task(sched.run())
    await sched.submit(work)
    with pytest.raises(TooLarge):
        await asyncio.wait_for(task, WAIT_S)
    assert ack.calls == 0  # not acked: a restart replays it
    with pytest.raises(TooLarge):
        await sched.drain()


# ---- the live dashboard's feed -----------------------------------------------------------------------------
async def test_live_dashboard_sees_each_enriched_event_once_the_broker_has_it() -> None:
    from pipeline.dashboard.live import LiveState

    live = LiveState()
    settings = make_settings(late_policy="defer")
    sched, primary, sink, clock = build(settings, observers=[live])
    on_time, _ = make_work(clock, "a charge", id="e1", age_s=0.030)
    late, _ = make_work(clock, "a package", id="e2", age_s=5.0, offset=43)  # deferred: not enriched here
    async with running(sched) as task:
        await sched.submit(on_time)
        await sched.submit(late)
        await eventually(lambda: len(sink.sent) == 2, task)
        assert live.events_total == 0  # not before the broker acknowledged the record
        sink.ack_all()
        await eventually(lambda: live.events_total == 1, task)
        await settle()
    snap = live.snapshot(clock.now + 1)
    assert snap["events_total"] == 1
    assert snap["labels"] == ["billing"]
    assert snap["latency_ms"]["p50"] == pytest.approx(30, rel=0.02)


# ---- (i) the batch path: a whole fetch at once, inputs reported done by position ------------------------------
class Done:
    """The reader's offset bookkeeping, as the scheduler's `inputs_done` sees it."""

    def __init__(self) -> None:
        self.positions: list[tuple[str, int]] = []
        self.calls = 0

    def __call__(self, positions: Sequence[tuple[str, int]]) -> None:
        self.calls += 1
        self.positions.extend(positions)


def batch_work(clock: Clock, text: str, offset: int, *, age_s: float = 0.0) -> Work:
    work, _ = make_work(clock, text, id=f"evt-{offset}", offset=offset, age_s=age_s)
    return Work(work.event, work.raw, None, ("events/0", offset))


def build_batch_path(settings: Settings) -> tuple[BatchScheduler, FakeWorker, FakeSink, Clock, Done]:
    sched, primary, sink, clock = build(settings)
    done = Done()
    sched.inputs_done = done
    return sched, primary, sink, clock, done


async def test_submit_batch_reports_positions_done_once_per_batch_after_the_broker() -> None:
    settings = make_settings(max_batch=4)
    sched, primary, sink, clock, done = build_batch_path(settings)
    works = [batch_work(clock, f"package {i} lost", i) for i in range(3)]
    async with running(sched) as task:
        await asyncio.wait_for(sched.submit_batch(works), WAIT_S)
        assert sched.room() == settings.batching.queue_limit - 3
        await eventually(lambda: len(sink.sent) == 3, task)
        assert primary.calls == [["package 0 lost", "package 1 lost", "package 2 lost"]]  # one model batch
        sink.sent[0].future.set_result(None)
        sink.sent[2].future.set_result(None)
        await settle()
        assert done.positions == []  # evt-1's record is not stored yet
        sink.ack_all()
        await eventually(lambda: done.calls == 1, task)
        assert done.positions == [("events/0", 0), ("events/0", 1), ("events/0", 2)]
        assert sched.room() == settings.batching.queue_limit and sched.held == 0


async def test_submit_batch_rejects_go_to_the_dlq_and_count_towards_the_room() -> None:
    settings = make_settings(queue_limit=4, max_batch=4)
    sched, primary, sink, clock, done = build_batch_path(settings)
    bad = Rejected("not_json", "not valid JSON", Origin("events", 0, 7, key=b"k"), b"{", ("events/0", 7))
    async with running(sched) as task:
        await asyncio.wait_for(sched.submit_batch([], rejects=[bad]), WAIT_S)
        assert sched.room() == 3
        await eventually(lambda: len(sink.sent) == 1, task)
        doc = sink.sent[0].doc()
        assert sink.sent[0].topic == "events.dlq" and not list(DLQ.iter_errors(doc))
        assert (doc["error"]["type"], doc["original"]["offset"]) == ("not_json", 7)
        assert done.positions == []
        sink.ack_all()
        await eventually(lambda: done.positions == [("events/0", 7)], task)
        assert sched.room() == 4
        assert primary.calls == []


async def test_submit_batch_late_events_are_deferred_and_then_done() -> None:
    settings = make_settings(late_policy="defer", max_batch=4)
    sched, primary, sink, clock, done = build_batch_path(settings)
    late = batch_work(clock, "package late", 1, age_s=10.0)  # 10 s old: past its 250 ms budget
    on_time = batch_work(clock, "package fresh", 2)
    async with running(sched) as task:
        await asyncio.wait_for(sched.submit_batch([late, on_time]), WAIT_S)
        await eventually(lambda: len(sink.sent) == 2, task)
        assert sorted(s.topic for s in sink.sent) == ["events.deferred", "events.enriched"]
        assert primary.calls == [["package fresh"]]
        sink.ack_all()
        await eventually(lambda: sorted(done.positions) == [("events/0", 1), ("events/0", 2)], task)


async def test_deferred_room_bounds_the_deferred_lane_of_the_batch_path() -> None:
    settings = make_settings(max_batch=2)
    sched, primary, sink, clock, done = build_batch_path(settings)
    assert sched.deferred_room() == 8  # 4 x max_batch
    works = [batch_work(clock, f"package {i}", i) for i in range(3)]
    await sched.submit_batch([], deferred=works)
    assert sched.deferred_room() == 5 and sched.room() == settings.batching.queue_limit
    drain = asyncio.create_task(sched.drain())
    await eventually(lambda: len(sink.sent) == 3, drain)
    assert all(s.doc()["analysis"]["deferred"] for s in sink.sent)
    sink.ack_all()
    await asyncio.wait_for(drain, WAIT_S)
    assert sched.deferred_room() == 8
    assert sorted(done.positions) == [("events/0", 0), ("events/0", 1), ("events/0", 2)]


async def test_wait_for_room_returns_once_a_delivery_frees_room() -> None:
    settings = make_settings(queue_limit=2, max_batch=2)
    sched, primary, sink, clock, done = build_batch_path(settings)
    async with running(sched) as task:
        await sched.submit_batch([batch_work(clock, "package a", 0), batch_work(clock, "package b", 1)])
        assert sched.room() == 0
        waiting = asyncio.create_task(sched.wait_for_room())
        await eventually(lambda: len(sink.sent) == 2, task)
        await settle()
        assert not waiting.done()
        sink.ack_all()
        await asyncio.wait_for(waiting, WAIT_S)
        assert sched.room() == 2


# ---- languages: a batch split among encoders by the router ------------------------------------------------
class RoutedFakeWorker(FakeWorker):
    """Like the router (pipeline/model/router.py): German texts (`de:`) to a second encoder; results in the
    batch's order, with each sub-batch's size and seconds."""

    async def classify(self, texts: list[str]) -> tuple[list[Classification], float]:
        from pipeline.model.router import RoutedResults

        self.calls.append(list(texts))
        english, multi = ModelInfo("fake-en", "sha256:en"), ModelInfo("fake-multi", "sha256:multi")
        out = []
        for t in texts:
            lang = "de" if t.startswith("de:") else "en"
            label = "billing" if "charge" in t or "Abbuchung" in t else "shipping"
            scores = {"billing": 0.9, "shipping": 0.1} if label == "billing" else {"billing": 0.1, "shipping": 0.9}
            out.append(Classification(label, 0.9, scores, lang=lang, model=multi if lang == "de" else english))
        n_de = sum(1 for c in out if c.lang == "de")
        parts = {"fake-en": (len(out) - n_de, 0.002), "fake-multi": (n_de, 0.010)}
        return RoutedResults(out, {k: v for k, v in parts.items() if v[0]}), 0.012


async def test_a_routed_batch_is_delivered_in_order_with_each_language_and_teaches_each_encoders_time() -> None:
    from pipeline.output.observers import BaseObserver, Delivered

    class Langs(BaseObserver):
        def __init__(self) -> None:
            self.langs: list[list[str]] = []

        def on_delivered(self, batch: Delivered) -> None:
            if batch.outcome == "enriched":
                self.langs.append(list(batch.langs))

    settings = make_settings(max_batch=4)
    observer = Langs()
    sched, primary, sink, clock = build(settings, RoutedFakeWorker(), observers=[observer])
    texts = ["de: eine Abbuchung", "a charge", "de: mein Paket", "my parcel"]
    works = [make_work(clock, t, id=f"evt-{i}", offset=i) for i, t in enumerate(texts)]
    async with running(sched) as task:
        for w, _ in works:
            await sched.submit(w)
        await eventually(lambda: len(sink.sent) == 4, task)
        assert primary.calls == [texts]  # one batch: the router splits it on the model thread
        assert [s.key for s in sink.sent] == [b"evt-0", b"evt-1", b"evt-2", b"evt-3"]
        docs = [s.doc()["analysis"] for s in sink.sent]
        assert [(a["lang"], a["model"]["name"], a["label"]) for a in docs] == [
            ("de", "fake-multi", "billing"),
            ("en", "fake-en", "billing"),
            ("de", "fake-multi", "shipping"),
            ("en", "fake-en", "shipping"),
        ]
        for s in sink.sent:
            assert not list(ENRICHED.iter_errors(s.doc()))
        sink.ack_all()
        await eventually(lambda: all(ack.calls == 1 for _, ack in works), task)
        assert observer.langs == [["de", "en", "de", "en"]]
    # each encoder's sub-batch observed on its own fit, with its share of the events
    st = sched.service_time
    assert set(st.shares) == {"fake-en", "fake-multi"}
    assert st.shares["fake-en"] == pytest.approx(st.shares["fake-multi"])
    assert st.encoders["fake-multi"].observed == 1 and st.encoders["fake-en"].observed == 1
