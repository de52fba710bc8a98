"""WindowAnalytics with a fake clock, sink, embedder and generator: records out, acks after the broker's.

Deterministic: time moves only when a test moves the fake clock (whose `sleep` the runner waits on), windows
close when a test calls `close_due()`, and every wait is on something the code under test does (a record
reaching the sink, a task finishing), bounded by `WAIT_S` so a bug fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio

import jsonschema
import numpy as np
import orjson
import pytest

from pipeline.analytics.runner import WindowAnalytics
from pipeline.config import load_settings
from pipeline.model.onnx_generator import GenerationStats
from pipeline.output.observers import BaseObserver, Delivered
from schemas import load_schema

T0 = 1_800_000_000.0
WAIT_S = 5.0


class Clock:
    """A fake clock with the `sleep` the runner waits on: sleepers wake when the test moves time past them."""

    def __init__(self) -> None:
        self.t = T0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self.slept = asyncio.Event()  # someone started sleeping

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.t + seconds, fut))
        self.slept.set()
        self._wake_due()
        await fut

    def advance_to(self, t: float) -> None:
        self.t = t
        self._wake_due()

    def _wake_due(self) -> None:
        for at, fut in list(self._sleepers):
            if at <= self.t:
                self._sleepers.remove((at, fut))
                if not fut.done():
                    fut.set_result(None)


class FakeSink:
    """Stores what is sent; the broker acks at once, or, while `holding`, when the test calls `release()`.
    Records of a `routes` topic are handed, once acked, to its consumer (the partials to the merger)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict]] = []
        self.holding = False
        self.routes: dict[str, object] = {}
        self.routed: set[asyncio.Task] = set()
        self._pending: list[tuple[asyncio.Future[None], str, bytes]] = []
        self._changed = asyncio.Event()

    async def send(self, topic, key, value, headers=None):
        self.sent.append((topic, key, orjson.loads(value)))
        fut = asyncio.get_running_loop().create_future()
        if self.holding:
            self._pending.append((fut, topic, value))
        else:
            fut.set_result(None)
            if topic in self.routes:
                await self.routes[topic](value)
        self._changed.set()
        return fut

    def release(self) -> None:
        self.holding = False
        for fut, topic, value in self._pending:
            fut.set_result(None)
            if topic in self.routes:
                self.routed.add(asyncio.ensure_future(self.routes[topic](value)))
        self._pending.clear()

    def of(self, topic: str) -> list[dict]:
        return [r for t, _, r in self.sent if t == topic]

    async def wait_for(self, topic: str, n: int) -> None:
        async def enough() -> None:
            while len(self.of(topic)) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), WAIT_S)


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
        return [f"Customers report problem {'abcdefgh'[i]}." for i in range(len(prompts))], stats


class FakeObserver(BaseObserver):
    def __init__(self) -> None:
        self.delivered: list[Delivered] = []

    def on_delivered(self, batch: Delivered) -> None:
        self.delivered.append(batch)

    def records(self, outcome: str) -> list[dict]:
        return [r for b in self.delivered if b.outcome == outcome for r in b.records]


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


def analytics(s, sink, generator, clock: Clock, observers=()) -> WindowAnalytics:
    """A worker owning every partition: its partials come back to its own merger (as through Kafka)."""
    a = WindowAnalytics(s, sink, FakeEmbedder(), generator, observers=observers, clock=clock, sleep=clock.sleep)
    a.assign(range(s.topics.partitions))
    sink.routes[s.topics.stats_partials] = lambda value: a.submit_partial(value, lambda: None, 0)
    return a


async def settle(a: WindowAnalytics, sink: FakeSink) -> None:
    """Wait until every record started is stored and acked, the partials merged included."""

    async def all_done() -> None:
        while True:
            await a.drain()
            if not sink.routed:
                return
            routed, sink.routed = sink.routed, set()
            await asyncio.gather(*routed)

    await asyncio.wait_for(all_done(), WAIT_S)


async def close_and_drain(a: WindowAnalytics, clock: Clock, t: float, sink: FakeSink) -> None:
    """Move time to `t`, close what is due then, and wait until its records are stored and acked."""
    clock.advance_to(t)
    a.close_due()
    await settle(a, sink)


def run(coro):
    return asyncio.run(coro)


def test_one_summary_per_key_window_and_acks_only_after_the_broker(monkeypatch) -> None:
    s = settings(monkeypatch)

    async def main() -> None:
        clock, sink, observer = Clock(), FakeSink(), FakeObserver()
        sink.holding = True  # the broker has not acked anything yet
        a = analytics(s, sink, FakeGenerator(), clock, [observer])
        acked: list[str] = []
        for i in range(4):
            await a.submit(enriched(i, "k1", T0 + i), lambda i=i: acked.append(f"e{i}"))
        await a.submit(enriched(9, "k2", T0 + 2), lambda: acked.append("e9"))
        clock.advance_to(T0 + 11)
        a.close_due()
        await sink.wait_for(s.topics.summaries, 2)
        await sink.wait_for(s.topics.stats_partials, 1)
        assert acked == []  # summaries and partial sent, not acknowledged: nothing acked
        assert a.held == 5 and observer.delivered == []
        sink.release()
        await settle(a, sink)
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
        assert sorted(r["key"] for r in observer.records("summary")) == ["k1", "k2"]
        assert observer.records("stats") == [stats]
        assert all(b.size == 1 for b in observer.delivered)  # one report per record stored, not per event

    run(main())


def test_a_planted_spike_gives_one_alert(monkeypatch) -> None:
    s = settings(monkeypatch)

    async def main() -> None:
        clock, sink, observer = Clock(), FakeSink(), FakeObserver()
        a = analytics(s, sink, FakeGenerator(), clock, [observer])
        i = 0
        for w in range(4):  # 3 quiet windows, then a spike of 'account_access'
            start = T0 + 10 * w
            clock.advance_to(start)
            labels = ["billing", "account_access"] if w < 3 else ["billing"] + ["account_access"] * 12
            for label in labels:
                i += 1
                await a.submit(enriched(i, f"k{i % 2}", start + 1, label), lambda: None)
            await close_and_drain(a, clock, start + 11, sink)
        (alert,) = sink.of(s.topics.alerts)
        jsonschema.validate(alert, load_schema("alert"))
        assert alert["label"] == "account_access" and alert["count"] == 12
        assert alert["baseline"] == {"mean": 1.0, "std": 0.0, "windows": 3}
        assert alert["method"] == "abstractive" and alert["explanation"]
        assert len(alert["sample_ids"]) == 5
        assert observer.records("alert") == [alert]
        assert len(sink.of(s.topics.stats)) == 4

    run(main())


def test_generator_failure_falls_back_to_extractive(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false")

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        a = analytics(s, sink, FakeGenerator(fail=True), clock)
        for i in range(5):
            await a.submit(enriched(i, "k", T0 + i), lambda: None)
        await close_and_drain(a, clock, T0 + 11, sink)
        (summary,) = sink.of(s.topics.summaries)
        assert summary["method"] == "extractive" and summary["summary"]
        assert summary["count"] == 5

    run(main())


def test_without_a_generator_every_summary_is_extractive_and_bad_records_are_skipped(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false")

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        a = analytics(s, sink, None, clock)
        acked = []
        await a.submit(b"not json", lambda: acked.append("bad"))
        await a.submit(orjson.dumps({"id": "x", "text": "t", "ts": "yesterday"}), lambda: acked.append("bad2"))
        for i in range(5):
            await a.submit(enriched(i, "k", T0 + i), lambda: acked.append("ok"))
        assert acked == ["bad", "bad2"] and a.emitted["bad"] == 2
        await close_and_drain(a, clock, T0 + 11, sink)
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
        sink.holding = True
        a = analytics(s, sink, None, clock)
        for i in range(4):
            await a.submit(enriched(i, "k", T0), lambda: None)
        blocked = asyncio.ensure_future(a.submit(enriched(9, "k", T0), lambda: None))
        await sink.wait_for(s.topics.summaries, 2)  # both full windows closed and summarized, not yet acked
        assert not blocked.done() and a.held == 4
        sink.release()
        await settle(a, sink)
        # Summarized, but the records also wait for their partition's partial of the window: at its close.
        assert not blocked.done() and a.held == 4
        clock.advance_to(T0 + 11)
        a.close_due()
        await asyncio.wait_for(blocked, WAIT_S)
        await settle(a, sink)
        assert a.held == 1  # the fifth record, in a window opened after the close (late)

    run(main())


def test_summaries_off_acks_after_the_partial(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_SUMMARIES__ENABLED="false")

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        sink.holding = True
        a = analytics(s, sink, None, clock)
        acked = []
        await a.submit(enriched(1, "k", T0 + 1), lambda: acked.append(1))
        clock.advance_to(T0 + 11)
        a.close_due()
        await sink.wait_for(s.topics.stats_partials, 1)
        assert acked == []
        sink.release()
        await settle(a, sink)
        assert sink.of(s.topics.summaries) == [] and len(sink.of(s.topics.stats)) == 1 and acked == [1]

    run(main())


class SlowGenerator(FakeGenerator):
    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def generate(self, prompts, max_new_tokens):
        self.started.set()
        await self.release.wait()
        return await super().generate(prompts, max_new_tokens)


def test_a_batch_that_cannot_start_in_time_goes_extractive_without_waiting(monkeypatch) -> None:
    # Prior estimate for one prompt: ~25 tokens x 3 ms + 40 new tokens x 25 ms = ~1.1 s; budget 1.5 s, so a
    # batch for a window closed at T0+21 must start by ~T0+21.4.
    s = settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false", SLMSTREAM_SUMMARIES__BUDGET_S="1.5")

    async def main() -> None:
        clock, sink, gen = Clock(), FakeSink(), SlowGenerator()
        a = analytics(s, sink, gen, clock)
        for i in range(3):
            await a.submit(enriched(i, "first", T0 + i), lambda: None)
        clock.advance_to(T0 + 11)
        a.close_due()  # "first" closes; its batch takes the generator, which holds on until released
        await asyncio.wait_for(gen.started.wait(), WAIT_S)
        for i in range(3):
            await a.submit(enriched(10 + i, "second", T0 + 10 + i), lambda: None)
        a._queued_s = 0.0  # noqa: SLF001  the planner wrongly believes the generator free: "second" is planned abstractive
        clock.slept.clear()
        clock.advance_to(T0 + 21)
        a.close_due()  # "second" closes; its batch waits for the generator, at most until its latest start
        await asyncio.wait_for(clock.slept.wait(), WAIT_S)
        assert sink.of(s.topics.summaries) == []  # still waiting: its latest start has not come
        clock.advance_to(T0 + 21.5)  # past it, the generator still busy: extractive now
        await sink.wait_for(s.topics.summaries, 1)
        assert [(r["key"], r["method"]) for r in sink.of(s.topics.summaries)] == [("second", "extractive")]
        assert gen.batches == []  # "first" still holds the generator
        gen.release.set()
        await settle(a, sink)
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
        a = analytics(s, sink, RefusingGenerator(), clock)
        for i in range(4):
            await a.submit(enriched(i, "k", T0 + i), lambda: None)
        await close_and_drain(a, clock, T0 + 11, sink)
        assert [r["method"] for r in sink.of(s.topics.summaries)] == ["extractive"] and a.held == 0

    run(main())


def test_the_partial_first_window_is_not_part_of_the_baseline(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_SUMMARIES__ENABLED="false", SLMSTREAM_ALERTS__MIN_COUNT="3")

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        a = analytics(s, sink, None, clock)
        i = 0
        for w, n in enumerate([1, 2, 2, 7]):
            start = T0 + 10 * w
            clock.advance_to(start)
            first = start + (5 if w == 0 else 0)  # the stream started half-way into the first window
            for _ in range(n):
                i += 1
                await a.submit(enriched(i, "k", first), lambda: None)
            await close_and_drain(a, clock, start + 11, sink)
        (alert,) = sink.of(s.topics.alerts)
        assert alert["baseline"] == {"mean": 2.0, "std": 0.0, "windows": 2}
        assert alert["method"] == "extractive"  # no generator: counts and the most typical message
        assert alert["explanation"].startswith("7 'billing' events vs about 2.0 per window before; e.g. message")

    run(main())


def test_run_closes_windows_when_woken_and_stops_on_a_record_that_can_never_be_sent(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false")

    class TooLarge(Exception):
        retriable = False

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        a = analytics(s, sink, None, clock)
        loop = asyncio.ensure_future(a.run())
        await a.submit(enriched(1, "k", T0 + 1), lambda: None)
        clock.advance_to(T0 + 11)
        await a.submit(enriched(2, "k", T0 + 11), lambda: None)  # a submit wakes the loop: the first window closes
        await sink.wait_for(s.topics.summaries, 1)
        assert not loop.done()

        async def refuse(*args, **kwargs):
            raise TooLarge("record too large")

        sink.send = refuse
        clock.advance_to(T0 + 22)
        await a.submit(enriched(3, "k", T0 + 22), lambda: None)
        with pytest.raises(TooLarge):
            await asyncio.wait_for(loop, WAIT_S)  # loudly, not a stall
        with pytest.raises(TooLarge):
            await a.drain()

    run(main())


def test_a_revoked_partition_drops_its_open_windows_unacked_and_frees_their_room(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false", SLMSTREAM_TOPICS__PARTITIONS="2")

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        a = analytics(s, sink, None, clock)
        acked: list[str] = []
        await a.submit(enriched(1, "a", T0 + 1), lambda: acked.append("a"), 0)
        await a.submit(enriched(2, "b", T0 + 1), lambda: acked.append("b"), 1)
        assert a.held == 2
        assert a.revoke([1]) == 1 and a.held == 1
        await a.submit(enriched(3, "b", T0 + 2), lambda: acked.append("late b"), 1)  # in flight at the revoke
        assert a.held == 1
        await close_and_drain(a, clock, T0 + 11, sink)
        assert [r["key"] for r in sink.of(s.topics.summaries)] == ["a"] and acked == ["a"]
        # Only partition 0 is ours: its partials (empty ones for the windows before); partition 1's come from
        # its new owner.
        partials = sink.of(s.topics.stats_partials)
        assert {r["partition"] for r in partials} == {0}
        assert [(r["window"]["start_ms"], r["events"]) for r in partials if r["events"]] == [(int(T0 * 1000), 1)]

    run(main())


def test_every_owned_partition_gets_a_partial_per_window_even_without_records(monkeypatch) -> None:
    s = settings(
        monkeypatch,
        SLMSTREAM_ALERTS__ENABLED="false",
        SLMSTREAM_TOPICS__PARTITIONS="3",
        SLMSTREAM_SUMMARIES__STATS_WAIT_S="1",
    )

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        # Assigned at T0: from the oldest window the merger may still wait for (grace + window + stats wait
        # = 12 s back: the window starting at T0 - 20) on.
        a = analytics(s, sink, None, clock)
        await a.submit(enriched(1, "a", T0 + 1), lambda: None, 2)
        await close_and_drain(a, clock, T0 + 11, sink)
        partials = sorted(
            (r["window"]["start_ms"], r["partition"], r["events"]) for r in sink.of(s.topics.stats_partials)
        )
        w00, w0, w1 = int((T0 - 20) * 1000), int((T0 - 10) * 1000), int(T0 * 1000)
        assert partials == [(w, p, 0) for w in (w00, w0) for p in range(3)] + [(w1, 0, 0), (w1, 1, 0), (w1, 2, 1)]
        (stats,) = sink.of(s.topics.stats)  # the idle windows before T0 have none
        assert (stats["events"], stats["final"], stats["partitions"]) == (1, True, 3)

    run(main())


def test_spikes_are_checked_in_window_order_even_when_windows_complete_out_of_order(monkeypatch) -> None:
    from pipeline.analytics.merge import empty_partial, partial_record
    from pipeline.analytics.windows import Window, WindowEvent

    s = settings(monkeypatch, SLMSTREAM_TOPICS__PARTITIONS="2", SLMSTREAM_ALERTS__MIN_COUNT="3")

    def partial(w: int, p: int, n: int, label: str = "billing") -> bytes:
        start = int((T0 + 10 * w) * 1000)
        win = Window(str(p), start, start + 10_000, 0, 0.0, 0.0)
        win.events = [WindowEvent(f"w{w}p{p}e{i}", "t", label, "email", start + 1, 5.0) for i in range(n)]
        return orjson.dumps(partial_record(win, p, start, start + 10_000))

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        a = WindowAnalytics(s, sink, FakeEmbedder(), None, clock=clock, sleep=clock.sleep)
        for w in range(3):  # three quiet windows, complete
            await a.submit_partial(partial(w, 0, 1), lambda: None)
            await a.submit_partial(partial(w, 1, 1), lambda: None)
        await a.submit_partial(partial(3, 0, 1), lambda: None)  # window 3 waits for partition 1 ...
        await a.submit_partial(partial(4, 0, 20, "shipping"), lambda: None)  # ... when the spike window completes
        await a.submit_partial(
            orjson.dumps(empty_partial(1, int((T0 + 40) * 1000), int((T0 + 50) * 1000))), lambda: None
        )
        await sink.wait_for(s.topics.stats, 3)
        assert sink.of(s.topics.alerts) == [] and len(sink.of(s.topics.stats)) == 3  # the spike waits for window 3
        await a.submit_partial(partial(3, 1, 1), lambda: None)
        await settle(a, sink)
        (alert,) = sink.of(s.topics.alerts)
        assert alert["label"] == "shipping" and alert["baseline"]["windows"] == 4
        assert [r["window"]["start_ms"] for r in sink.of(s.topics.stats)][-2:] == [
            int((T0 + 30) * 1000),
            int((T0 + 40) * 1000),
        ]

    run(main())


def test_a_window_over_several_labels_is_summarized_per_label(monkeypatch) -> None:
    """Extractive, each dominant label named with its most central texts, even with a generator free."""
    s = settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false")

    async def main() -> None:
        for generator in (None, FakeGenerator()):
            clock, sink = Clock(), FakeSink()
            a = analytics(s, sink, generator, clock)
            for i, label in enumerate(["billing", "delivery", "billing", "delivery", "billing"]):
                await a.submit(enriched(i, "k", T0 + i, label), lambda: None)
            await close_and_drain(a, clock, T0 + 11, sink)
            (summary,) = sink.of(s.topics.summaries)
            assert summary["labels"] == {"billing": 3, "delivery": 2}
            assert summary["method"] == "extractive"
            assert summary["summary"].startswith("billing (3): message ")
            assert "; delivery (2): message " in summary["summary"]
            jsonschema.validate(summary, load_schema("summary"))
            if generator is not None:
                assert generator.batches == []  # the generator wrote nothing for it

    run(main())


def test_a_window_about_one_label_still_gets_the_generators_summary(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false")

    async def main() -> None:
        clock, sink = Clock(), FakeSink()
        generator = FakeGenerator()
        a = analytics(s, sink, generator, clock)
        for i, label in enumerate(["billing", "billing", "billing", "billing", "delivery"]):
            await a.submit(enriched(i, "k", T0 + i, label), lambda: None)
        await close_and_drain(a, clock, T0 + 11, sink)
        (summary,) = sink.of(s.topics.summaries)
        assert summary["method"] == "abstractive" and generator.batches == [1]


# ---- languages: the generator writes only about windows in a language it reads ------------------------------
class PrefixLanguageId:
    """`de:` texts are German, the rest English."""

    name = "prefix"

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, texts):
        self.calls += 1
        return ["de" if t.startswith("de:") else "en" for t in texts]


def in_german(value: bytes) -> bytes:
    doc = orjson.loads(value)
    doc["text"] = "de: " + doc["text"]
    return orjson.dumps(doc)


def test_a_window_in_a_language_the_generator_does_not_read_is_extractive_and_says_why(monkeypatch) -> None:
    s = settings(monkeypatch)

    async def main() -> None:
        clock, sink, generator, lid = Clock(), FakeSink(), FakeGenerator(), PrefixLanguageId()
        a = WindowAnalytics(
            s, sink, FakeEmbedder(), generator, clock=clock, sleep=clock.sleep,
            language_id=lid, generator_languages=frozenset({"en"}),
        )  # fmt: skip
        a.assign(range(s.topics.partitions))
        sink.routes[s.topics.stats_partials] = lambda value: a.submit_partial(value, lambda: None, 0)
        for i in range(4):
            await a.submit(enriched(i, "english", T0 + i), lambda: None)
            await a.submit(in_german(enriched(10 + i, "german", T0 + i)), lambda: None)
        await close_and_drain(a, clock, T0 + 11, sink)
        by_key = {r["key"]: r for r in sink.of(s.topics.summaries)}
        for r in by_key.values():
            jsonschema.validate(r, load_schema("summary"))
        assert by_key["english"]["method"] == "abstractive" and by_key["english"]["lang"] == "en"
        assert "reason" not in by_key["english"]
        german = by_key["german"]
        assert german["method"] == "extractive" and german["model"] == "fake-encoder"
        assert (german["lang"], german["reason"]) == ("de", "generator does not read de")
        assert german["summary"].startswith("de: ")
        assert generator.batches == [1]  # only the English window's prompt reached the generator

    run(main())


def test_a_spike_in_a_language_the_generator_does_not_read_is_explained_extractively(monkeypatch) -> None:
    s = settings(monkeypatch, SLMSTREAM_SUMMARIES__ENABLED="false")

    async def main() -> None:
        clock, sink, generator = Clock(), FakeSink(), FakeGenerator()
        a = WindowAnalytics(
            s, sink, FakeEmbedder(), generator, clock=clock, sleep=clock.sleep,
            language_id=PrefixLanguageId(), generator_languages=frozenset({"en"}),
        )  # fmt: skip
        a.assign(range(s.topics.partitions))
        sink.routes[s.topics.stats_partials] = lambda value: a.submit_partial(value, lambda: None, 0)
        i = 0
        for w in range(4):  # 3 quiet windows, then a spike of German 'account_access' messages
            start = T0 + 10 * w
            clock.advance_to(start)
            labels = ["billing", "account_access"] if w < 3 else ["billing"] + ["account_access"] * 12
            for label in labels:
                i += 1
                await a.submit(in_german(enriched(i, f"k{i % 2}", start + 1, label)), lambda: None)
            await close_and_drain(a, clock, start + 11, sink)
        (alert,) = sink.of(s.topics.alerts)
        jsonschema.validate(alert, load_schema("alert"))
        assert alert["method"] == "extractive" and alert["explanation"].startswith("12 'account_access' events")
        assert (alert["lang"], alert["reason"]) == ("de", "generator does not read de")
        assert generator.batches == []

    run(main())
