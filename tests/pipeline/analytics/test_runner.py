"""WindowAnalytics with a fake clock, sink, embedder and generator: records out, acks after the broker's."""

from __future__ import annotations

import asyncio

import jsonschema
import numpy as np
import orjson
import pytest

from pipeline.analytics.runner import WindowAnalytics
from pipeline.config import load_settings
from pipeline.model.onnx_generator import GenerationStats
from schemas import load_schema

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class FakeSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict]] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def send(self, topic, key, value, headers=None):
        self.sent.append((topic, key, orjson.loads(value)))
        fut = asyncio.get_running_loop().create_future()

        async def ack_later() -> None:
            await self.hold.wait()
            fut.set_result(None)

        asyncio.ensure_future(ack_later())
        return fut

    def of(self, topic: str) -> list[dict]:
        return [r for t, _, r in self.sent if t == topic]


class FakeEmbedder:
    name = "fake-encoder"

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts):
        self.calls += 1
        return np.array([[1.0, 0.1 * len(t)] for t in texts], dtype=np.float32)


class FakeGenerator:
    name = "fake-gen"
    max_batch = 8

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail

    def count_tokens(self, prompt: str) -> int:
        return len(prompt.split())

    async def generate(self, prompts, max_new_tokens):
        if self.fail:
            raise RuntimeError("boom")
        self.batches.append(len(prompts))
        stats = GenerationStats(prompts=len(prompts), prompt_tokens=100, new_tokens=10, prefill_s=0.01, decode_s=0.01)
        return [f"Customers report problem {i}." for i in range(len(prompts))], stats


class FakeLive:
    def __init__(self) -> None:
        self.summaries, self.alerts, self.stats = [], [], []

    def add_summary(self, r):
        self.summaries.append(r)

    def add_alert(self, r):
        self.alerts.append(r)

    def add_stats(self, r):
        self.stats.append(r)


def enriched(i: int, key: str, ts_s: float, label: str = "billing") -> bytes:
    return orjson.dumps(
        {
            "id": f"e{i}",
            "text": f"message {i} about {label}",
            "ts": int(ts_s * 1000),
            "source": "email",
            "key": key,
            "analysis": {"label": label, "latency_ms": {"total": 40.0 + i}},
        }
    )


def settings(monkeypatch, **env: str):
    base = {
        "SLMSTREAM_SUMMARIES__ENABLED": "true",
        "SLMSTREAM_SUMMARIES__WINDOW_S": "10",
        "SLMSTREAM_SUMMARIES__GRACE_S": "1",
        "SLMSTREAM_ALERTS__ENABLED": "true",
        "SLMSTREAM_ALERTS__MIN_BASELINE_WINDOWS": "2",
    }
    for k, v in (base | env).items():
        monkeypatch.setenv(k, v)
    return load_settings()


async def settle(a: WindowAnalytics) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
        await a.drain()


def run(coro):
    return asyncio.run(coro)


def test_one_summary_per_key_window_and_acks_only_after_the_broker(monkeypatch) -> None:
    s = settings(monkeypatch)

    async def main() -> None:
        clock, sink, live = Clock(), FakeSink(), FakeLive()
        sink.hold.clear()  # the broker has not acked anything yet
        a = WindowAnalytics(s, sink, FakeEmbedder(), FakeGenerator(), live=live, clock=clock)
        acked: list[str] = []
        for i in range(4):
            await a.submit(enriched(i, "k1", T0 + i), lambda i=i: acked.append(f"e{i}"))
        await a.submit(enriched(9, "k2", T0 + 2), lambda: acked.append("e9"))
        loop = asyncio.ensure_future(a.run())
        clock.t = T0 + 11
        a._wake.set()  # noqa: SLF001  wake the loop now instead of sleeping till its timeout
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert acked == []  # summaries sent, not acknowledged: nothing acked
        sink.hold.set()
        await asyncio.sleep(0.05)
        await settle(a)
        loop.cancel()
        summaries = sorted(sink.of(s.topics.summaries), key=lambda r: r["key"])
        assert [(r["key"], r["count"], r["method"]) for r in summaries] == [
            ("k1", 4, "abstractive"),
            ("k2", 1, "extractive"),
        ]
        schema = load_schema("summary")
        for r in summaries:
            jsonschema.validate(r, schema)
        assert summaries[0]["labels"] == {"billing": 4} and summaries[0]["model"] == "fake-gen"
        assert summaries[0]["window"]["start_ms"] == int(T0 * 1000)
        assert summaries[0]["window"]["start"] == "2027-01-15T08:00:00.000Z"
        assert summaries[1]["model"] == "fake-encoder"
        assert sorted(acked) == ["e0", "e1", "e2", "e3", "e9"]
        assert a.held == 0
        (stats,) = sink.of(s.topics.stats)
        jsonschema.validate(stats, load_schema("stats"))
        assert stats["events"] == 5 and stats["labels"] == {"billing": 5} and stats["sources"] == {"email": 5}
        assert stats["latency_ms"]["mean"] == pytest.approx(43.0)
        assert len(live.summaries) == 2 and len(live.stats) == 1

    run(main())


def test_a_planted_spike_gives_one_alert(monkeypatch) -> None:
    s = settings(monkeypatch)

    async def main() -> None:
        clock, sink, live = Clock(), FakeSink(), FakeLive()
        a = WindowAnalytics(s, sink, FakeEmbedder(), FakeGenerator(), live=live, clock=clock)
        loop = asyncio.ensure_future(a.run())
        i = 0
        for w in range(4):  # 3 quiet windows, then a spike of 'account_access'
            start = T0 + 10 * w
            clock.t = start
            labels = ["billing", "account_access"] if w < 3 else ["billing"] + ["account_access"] * 12
            for label in labels:
                i += 1
                await a.submit(enriched(i, f"k{i % 2}", start + 1, label), lambda: None)
            clock.t = start + 11
            a._wake.set()  # noqa: SLF001  wake the loop now instead of sleeping till its timeout
            await asyncio.sleep(0.02)
            await settle(a)
        loop.cancel()
        (alert,) = sink.of(s.topics.alerts)
        jsonschema.validate(alert, load_schema("alert"))
        assert alert["label"] == "account_access" and alert["count"] == 12
        assert alert["baseline"] == {"mean": 1.0, "std": 0.0, "windows": 3}
        assert alert["method"] == "abstractive" and alert["explanation"]
        assert len(alert["sample_ids"]) == 5
        assert live.alerts == [alert]
        assert len(sink.of(s.topics.stats)) == 4

    run(main())


def test_generator_failure_falls_back_to_extractive(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false")

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        a = WindowAnalytics(s, sink, FakeEmbedder(), FakeGenerator(fail=True), clock=clock)
        for i in range(5):
            await a.submit(enriched(i, "k", T0 + i), lambda: None)
        loop = asyncio.ensure_future(a.run())
        clock.t = T0 + 11
        a._wake.set()  # noqa: SLF001  wake the loop now instead of sleeping till its timeout
        await asyncio.sleep(0.05)
        await settle(a)
        loop.cancel()
        (summary,) = sink.of(s.topics.summaries)
        assert summary["method"] == "extractive" and summary["summary"]
        assert summary["count"] == 5

    run(main())


def test_without_a_generator_every_summary_is_extractive_and_bad_records_are_skipped(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false")

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        a = WindowAnalytics(s, sink, FakeEmbedder(), None, clock=clock)
        acked = []
        await a.submit(b"not json", lambda: acked.append("bad"))
        await a.submit(orjson.dumps({"id": "x", "text": "t", "ts": "yesterday"}), lambda: acked.append("bad2"))
        for i in range(5):
            await a.submit(enriched(i, "k", T0 + i), lambda: acked.append("ok"))
        assert acked == ["bad", "bad2"] and a.emitted["bad"] == 2
        loop = asyncio.ensure_future(a.run())
        clock.t = T0 + 11
        a._wake.set()  # noqa: SLF001  wake the loop now instead of sleeping till its timeout
        await asyncio.sleep(0.05)
        await settle(a)
        loop.cancel()
        (summary,) = sink.of(s.topics.summaries)
        assert summary["method"] == "extractive" and acked.count("ok") == 5

    run(main())


def test_held_records_are_bounded(monkeypatch) -> None:
    s = settings(
        monkeypatch,
        SLMSTREAM_ALERTS__ENABLED="false",
        SLMSTREAM_SUMMARIES__MAX_HELD="4",
        SLMSTREAM_SUMMARIES__MAX_EVENTS_PER_WINDOW="2",
    )

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        sink.hold.clear()
        a = WindowAnalytics(s, sink, FakeEmbedder(), None, clock=clock)
        for i in range(4):
            await a.submit(enriched(i, "k", T0), lambda: None)
        blocked = asyncio.ensure_future(a.submit(enriched(9, "k", T0), lambda: None))
        await asyncio.sleep(0.05)
        assert not blocked.done() and a.held == 4  # full windows closed, their summaries not yet acked
        sink.hold.set()
        await asyncio.wait_for(blocked, 2)
        await settle(a)

    run(main())


def test_summaries_off_acks_after_the_stats_record(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_SUMMARIES__ENABLED="false")

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        a = WindowAnalytics(s, sink, FakeEmbedder(), None, clock=clock)
        acked = []
        await a.submit(enriched(1, "k", T0 + 1), lambda: acked.append(1))
        loop = asyncio.ensure_future(a.run())
        clock.t = T0 + 11
        a._wake.set()  # noqa: SLF001  wake the loop now instead of sleeping till its timeout
        await asyncio.sleep(0.05)
        await settle(a)
        loop.cancel()
        assert sink.of(s.topics.summaries) == [] and len(sink.of(s.topics.stats)) == 1 and acked == [1]

    run(main())


class SlowGenerator(FakeGenerator):
    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def generate(self, prompts, max_new_tokens):
        await self.release.wait()
        return await super().generate(prompts, max_new_tokens)


def test_a_batch_that_cannot_start_in_time_goes_extractive_without_waiting(monkeypatch) -> None:
    # Prior estimate for one prompt: ~25 tokens x 3 ms + 40 new tokens x 25 ms = ~1.1 s; budget 1.5 s.
    s = settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false", SLMSTREAM_SUMMARIES__BUDGET_S="1.5")

    async def main() -> None:
        clock, sink, gen = Clock(), FakeSink(), SlowGenerator()
        a = WindowAnalytics(s, sink, FakeEmbedder(), gen, clock=clock)
        for i in range(3):
            await a.submit(enriched(i, "first", T0 + i), lambda: None)
        loop = asyncio.ensure_future(a.run())
        clock.t = T0 + 11  # "first" closes; its batch holds the generator (SlowGenerator waits)
        a._wake.set()  # noqa: SLF001  wake the loop now instead of sleeping till its timeout
        await asyncio.sleep(0.05)
        for i in range(3):
            await a.submit(enriched(10 + i, "second", T0 + 10 + i), lambda: None)
        a._queued_s = 0.0  # noqa: SLF001  force the planner's state for this case; the planner wrongly believes the generator free: "second" is planned abstractive
        clock.t = T0 + 21  # "second" closes; its batch waits for the generator at most until its latest start
        a._wake.set()  # noqa: SLF001  wake the loop now instead of sleeping till its timeout
        await asyncio.sleep(0.8)  # longer than its slack (~0.4 s): it went extractive, the generator still busy
        assert [(r["key"], r["method"]) for r in sink.of(s.topics.summaries)] == [("second", "extractive")]
        gen.release.set()
        await asyncio.sleep(0.05)
        await settle(a)
        loop.cancel()
        assert [(r["key"], r["method"]) for r in sink.of(s.topics.summaries)][-1] == ("first", "abstractive")
        assert gen.batches == [1]

    run(main())


class RefusingGenerator(FakeGenerator):
    def count_tokens(self, prompt: str) -> int:
        raise ValueError("prompt too long")


def test_a_prompt_the_generator_refuses_gets_an_extractive_summary(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false")

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        a = WindowAnalytics(s, sink, FakeEmbedder(), RefusingGenerator(), clock=clock)
        for i in range(4):
            await a.submit(enriched(i, "k", T0 + i), lambda: None)
        loop = asyncio.ensure_future(a.run())
        clock.t = T0 + 11
        a._wake.set()  # noqa: SLF001  wake the loop now instead of sleeping till its timeout
        await asyncio.sleep(0.05)
        await settle(a)
        loop.cancel()
        assert [r["method"] for r in sink.of(s.topics.summaries)] == ["extractive"] and a.held == 0

    run(main())


def test_the_partial_first_window_is_not_part_of_the_baseline(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_SUMMARIES__ENABLED="false", SLMSTREAM_ALERTS__MIN_COUNT="3")

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        a = WindowAnalytics(s, sink, FakeEmbedder(), None, clock=clock)
        loop = asyncio.ensure_future(a.run())
        i = 0
        for w, n in enumerate([1, 2, 2, 7]):
            start = T0 + 10 * w
            clock.t = start
            first = start + (5 if w == 0 else 0)  # the stream started half-way into the first window
            for _ in range(n):
                i += 1
                await a.submit(enriched(i, "k", first), lambda: None)
            clock.t = start + 11
            a._wake.set()  # noqa: SLF001  wake the loop now instead of sleeping till its timeout
            await asyncio.sleep(0.02)
            await settle(a)
        loop.cancel()
        (alert,) = sink.of(s.topics.alerts)
        assert alert["baseline"] == {"mean": 2.0, "std": 0.0, "windows": 2}
        assert alert["method"] == "extractive"  # no generator: counts and the most typical message
        assert alert["explanation"].startswith("7 'billing' events vs about 2.0 per window before; e.g. message")

    run(main())
