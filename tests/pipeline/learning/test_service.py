"""pipeline/learning/service.py without Kafka: feedback routed to the store or the DLQ, an id resolved by the
worker that knows it (through the store), an id nobody knows expired to the DLQ on a fake clock, and offsets
committed only once the feedback's outcome is stored."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from pipeline import metrics
from pipeline.config import Settings, load_settings
from pipeline.learning.cache import RecentEvents
from pipeline.learning.feedback import example_key, feedback_json
from pipeline.learning.service import TOMBSTONE, LearningService
from pipeline.output.outbox import Outbox

FEEDBACK = "events.feedback"
TP = TopicPartition(FEEDBACK, 0)


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Any = None) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def take(self) -> list[tuple[str, bytes | None, bytes]]:
        out, self.sent = self.sent, []
        return out


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


class Pokes:
    def __init__(self, settings: Settings) -> None:
        self.classifier = SimpleNamespace(configured=SimpleNamespace(names=list(settings.labels)), names=[])
        self.version = None
        self.pokes = 0

    def poke(self) -> None:
        self.pokes += 1


def service(clock: Clock, known: dict[str, str] | None = None) -> tuple[LearningService, FakeSink]:
    settings = load_settings()
    recent = RecentEvents(100)
    for event_id, text in (known or {}).items():
        recent.put(event_id, text)
    svc = LearningService(settings, app=None, recent=recent, clock=clock)
    sink = FakeSink()
    svc.outbox = Outbox(sink)
    svc.trainer = Pokes(settings)  # type: ignore[assignment]
    svc.on_assigned([TP])
    return svc, sink


def record(offset: int, doc: dict[str, Any] | bytes) -> SimpleNamespace:
    value = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return SimpleNamespace(
        topic=FEEDBACK, partition=0, offset=offset, key=b"k", value=value, headers=(), timestamp=1_800_000_000_000
    )


async def feed(svc: LearningService, *records: SimpleNamespace) -> None:
    svc.offsets.read(TP, [r.offset for r in records])
    for r in records:
        await svc.handle_feedback(TP, r)
    await svc.outbox.drain()


def store_part(sent: list[tuple[str, bytes | None, bytes]]) -> list[tuple[bytes | None, bytes | None]]:
    return [(k, None if v == TOMBSTONE else v) for t, k, v in sent if t == "events.learning"]


def counted(outcome: str, reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("slmstream_feedback_total", {"outcome": outcome, "reason": reason}) or 0


async def test_examples_labels_and_bad_feedback() -> None:
    before = counted("rejected", "unknown_label"), counted("accepted", "id")
    svc, sink = service(Clock(), known={"e1": "I was charged twice"})
    await feed(
        svc,
        record(0, {"id": "e1", "label": "billing"}),
        record(1, {"text": "where is my parcel", "label": "shipping"}),
        record(2, {"label": "fraud", "description": "card used without consent"}),
        record(3, {"text": "someone used my card", "label": "fraud"}),  # right after its definition
        record(4, b"not json"),
        record(5, {"id": "e1", "label": "nope"}),
    )
    sent = sink.take()
    store = store_part(sent)
    assert [k for k, _ in store] == [
        example_key("I was charged twice").encode(),
        example_key("where is my parcel").encode(),
        b"label:fraud",
        example_key("someone used my card").encode(),
    ]
    dlq = [orjson.loads(v) for t, _, v in sent if t == "events.dlq"]
    assert [d["error"]["type"] for d in dlq] == ["not_json", "unknown_label"]
    assert dlq[0]["original"]["offset"] == 4
    assert svc.offsets.advanced() == {TP: 6}  # every outcome stored: all committable
    assert (counted("rejected", "unknown_label"), counted("accepted", "id")) == (before[0] + 1, before[1] + 1)


async def test_an_id_known_by_another_worker_is_resolved_through_the_store() -> None:
    clock = Clock()
    owner, owner_sink = service(clock)
    other, other_sink = service(clock, known={"e7": "the courier lost my package"})
    await feed(owner, record(0, {"id": "e7", "label": "shipping", "by": "ana"}))
    asked = store_part(owner_sink.take())
    assert [k for k, _ in asked] == [b"lookup:events.feedback:0:0"]
    assert owner.offsets.advanced() == {}  # not committed while the lookup waits
    for svc in (owner, other):  # every worker reads the store
        await svc.apply_store_records(asked)
        await svc.outbox.drain()
    answer = store_part(other_sink.take())
    assert [k for k, _ in answer] == [example_key("the courier lost my package").encode()]
    assert orjson.loads(answer[0][1] or b"")["resolves"] == "events.feedback:0:0"
    await other.apply_store_records(asked)  # read again (a replay): answered once
    assert other_sink.take() == []
    for svc in (owner, other):
        await svc.apply_store_records(answer)
        await svc.outbox.drain()
    assert store_part(owner_sink.take()) == [(b"lookup:events.feedback:0:0", None)]  # the lookup's tombstone
    assert owner.offsets.advanced() == {TP: 1}
    assert owner.trainer.pokes >= 1  # type: ignore[union-attr]
    clock.now += 60
    await owner.expire()
    assert owner_sink.take() == []  # resolved: nothing expires


async def test_an_id_nobody_knows_goes_to_the_dlq_after_the_timeout() -> None:
    clock = Clock()
    svc, sink = service(clock)
    await feed(svc, record(0, {"id": "gone", "label": "billing"}))
    sink.take()
    clock.now += svc.settings.learning.resolve_timeout_s - 0.1
    await svc.expire()
    assert sink.take() == [] and svc.offsets.advanced() == {}
    clock.now += 0.2
    await svc.expire()
    await svc.outbox.drain()
    sent = sink.take()
    assert store_part(sent) == [(b"lookup:events.feedback:0:0", None)]
    (dlq,) = [orjson.loads(v) for t, _, v in sent if t == "events.dlq"]
    assert dlq["error"]["type"] == "unknown_id"
    assert svc.offsets.advanced() == {TP: 1}


async def test_a_revoked_partitions_lookups_are_left_to_its_next_owner() -> None:
    clock = Clock()
    svc, sink = service(clock)
    await feed(svc, record(0, {"id": "gone", "label": "billing"}))
    await svc.on_revoked([TP])
    clock.now += 3600
    await svc.expire()
    assert [t for t, _, _ in sink.take()] == ["events.learning"]  # only the lookup: no DLQ, no commit


@pytest.mark.parametrize(
    ("value", "ok"),
    [(feedback_json("billing", id="e1"), True), (b"{}", False), (feedback_json("nope", id="e1"), False)],
)
async def test_publish_feedback_checks_before_sending(value: bytes, ok: bool, monkeypatch) -> None:
    svc, _ = service(Clock())
    sent: list[tuple[bytes, bytes]] = []

    class Producer:
        async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
            sent.append((key, value))
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    svc.app = SimpleNamespace(producer=None)
    monkeypatch.setattr("pipeline.learning.service.aiokafka_producer", lambda _: Producer())
    result = await svc.publish_feedback(value)
    assert (getattr(result, "label", None) is not None) is ok
    assert sent == ([(b"billing", value)] if ok else [])
