"""pipeline/dashboard/live.py: LiveState driven by a fake clock (epoch seconds passed in, or its injected clock)."""

from __future__ import annotations

import json

import pytest

from pipeline.dashboard.live import KEEP_RECORDS, LiveState
from pipeline.output.observers import Delivered

T0 = 1_800_000_000.0  # a wall-clock second that is a multiple of 5, so mix buckets start at T0


def test_empty_snapshot_has_every_field_and_no_numbers() -> None:
    snap = LiveState().snapshot(T0)
    assert snap["events_total"] == 0
    assert snap["events_per_s"] == 0
    assert snap["latency_ms"] == {"p50": None, "p95": None, "p99": None, "count": 0}
    assert snap["labels"] == []
    assert len(snap["rate_series"]) == 60 and all(p["n"] == 0 for p in snap["rate_series"])
    assert snap["summaries"] == snap["alerts"] == snap["stats"] == []
    json.dumps(snap)  # served as JSON as it is


def test_events_per_second_over_the_last_ten_seconds() -> None:
    live = LiveState()
    # 20 s of 50 events/s, then 30 s of silence
    for s in range(20):
        for i in range(50):
            live.observe_enriched("billing", 40.0, T0 + s + i / 50)
    assert live.snapshot(T0 + 20)["events_per_s"] == pytest.approx(50, rel=0.01)
    assert live.snapshot(T0 + 25)["events_per_s"] == pytest.approx(25, rel=0.01)  # half the window is silent
    assert live.snapshot(T0 + 50)["events_per_s"] == 0
    assert live.snapshot(T0 + 50)["events_total"] == 1000


def test_a_worker_younger_than_the_rate_window_is_divided_by_its_age() -> None:
    live = LiveState()
    for i in range(40):
        live.observe_enriched("billing", 40.0, T0 + i / 20)  # 20/s for 2 s
    assert live.snapshot(T0 + 2)["events_per_s"] == pytest.approx(20, rel=0.01)


def test_rate_series_counts_each_second_of_the_last_minute() -> None:
    live = LiveState()
    live.observe_enriched("a", 1.0, T0 + 0.2)
    live.observe_enriched("a", 1.0, T0 + 0.9)
    live.observe_enriched("a", 1.0, T0 + 3.5)
    series = live.snapshot(T0 + 4.1)["rate_series"]
    assert len(series) == 60
    assert series[-1]["t"] == T0 + 4
    counts = {p["t"]: p["n"] for p in series}
    assert counts[T0] == 2 and counts[T0 + 1] == 0 and counts[T0 + 3] == 1
    assert sum(counts.values()) == 3


def test_latency_percentiles_within_two_percent_over_the_last_minute_only() -> None:
    live = LiveState()
    # an old, slow minute that must not count
    for i in range(100):
        live.observe_enriched("a", 5000.0, T0 + i * 0.5)
    now = T0 + 200
    for v in range(1, 1001):  # 1..1000 ms spread over the last 50 s
        live.observe_enriched("a", float(v), now - 50 + v / 20)
    lat = live.snapshot(now + 0.5)["latency_ms"]
    assert lat["count"] == 1000
    assert lat["p50"] == pytest.approx(500, rel=0.02)
    assert lat["p95"] == pytest.approx(950, rel=0.02)
    assert lat["p99"] == pytest.approx(990, rel=0.02)


def test_zero_negative_and_nan_latencies_do_not_break_percentiles() -> None:
    live = LiveState()
    for v in (0.0, -3.0, float("nan"), 42.0):
        live.observe_enriched("a", v, T0)
    lat = live.snapshot(T0 + 1)["latency_ms"]
    assert lat["count"] == 4
    assert lat["p50"] is not None and lat["p50"] < 1
    assert lat["p99"] == pytest.approx(42, rel=0.02)


def test_label_mix_in_five_second_buckets_newest_last() -> None:
    live = LiveState()
    for i in range(5):
        live.observe_enriched("billing", 10.0, T0 + i)  # bucket T0
    for i in range(3):
        live.observe_enriched("outage", 10.0, T0 + 5 + i)  # bucket T0+5
    live.observe_enriched("billing", 10.0, T0 + 9.9)
    snap = live.snapshot(T0 + 10.2)
    mix = {b["t"]: b["counts"] for b in snap["label_mix"]}
    assert mix[T0] == {"billing": 5}
    assert mix[T0 + 5] == {"outage": 3, "billing": 1}
    assert mix[T0 + 10] == {}
    assert snap["label_mix"][-1]["t"] == T0 + 10
    assert [b["t"] for b in snap["label_mix"]] == sorted(b["t"] for b in snap["label_mix"])
    assert snap["labels"] == ["billing", "outage"]  # most frequent first
    assert snap["mix_bucket_s"] == 5


def test_memory_is_bounded_by_the_window() -> None:
    live = LiveState(window_s=60)
    for s in range(1000):
        live.observe_enriched("a", 10.0, T0 + s)
    assert len(live._seconds) <= 60  # noqa: SLF001  the bound on what it keeps is the point of this test
    snap = live.snapshot(T0 + 1000)
    assert sum(sum(b["counts"].values()) for b in snap["label_mix"]) <= 60
    assert snap["events_total"] == 1000
    # the histogram of one second is bounded by its bins, not by the events in it
    for i in range(10_000):
        live.observe_enriched("a", 10.0 + (i % 100) / 10, T0 + 1000.5)
    assert len(live._seconds[-1].latency_bins) < 40  # noqa: SLF001  the bound on what it keeps is the point of this test


def test_old_buckets_expire_on_snapshot_even_without_new_events() -> None:
    live = LiveState(window_s=60)
    live.observe_enriched("a", 10.0, T0)
    snap = live.snapshot(T0 + 61)
    assert snap["labels"] == []
    assert snap["latency_ms"]["count"] == 0
    assert live._seconds == type(live._seconds)()  # noqa: SLF001  the bound on what it keeps is the point of this test


def test_a_clock_step_back_is_counted_not_lost() -> None:
    live = LiveState()
    live.observe_enriched("a", 10.0, T0 + 5)
    live.observe_enriched("b", 10.0, T0 + 2)  # NTP stepped the clock back
    snap = live.snapshot(T0 + 6)
    assert snap["events_total"] == 2
    assert sum(sum(b["counts"].values()) for b in snap["label_mix"]) == 2


def test_latest_records_newest_first_and_capped() -> None:
    live = LiveState()
    for i in range(KEEP_RECORDS + 5):
        live.add_summary({"key": f"k{i}", "summary": "s"})
        live.add_alert({"label": "outage", "n": i})
    live.add_stats({"counts": {"outage": 1}})
    snap = live.snapshot(T0)
    assert len(snap["summaries"]) == KEEP_RECORDS
    assert snap["summaries"][0]["key"] == f"k{KEEP_RECORDS + 4}"
    assert snap["summaries"][-1]["key"] == "k5"
    assert [a["n"] for a in snap["alerts"]][:2] == [KEEP_RECORDS + 4, KEEP_RECORDS + 3]
    assert snap["stats"] == [{"counts": {"outage": 1}}]


def test_window_shorter_than_the_latency_minute_is_refused() -> None:
    with pytest.raises(ValueError, match="window_s"):
        LiveState(window_s=30)


def test_the_clock_is_injectable_and_is_the_default_now() -> None:
    now = [T0]
    live = LiveState(clock=lambda: now[0])
    for _ in range(20):
        live.observe_enriched("billing", 40.0)  # at the clock's now: T0
    now[0] = T0 + 2
    assert live.snapshot()["events_per_s"] == pytest.approx(10)  # 20 events over the 2 s the worker has lived
    assert live.snapshot()["now"] == T0 + 2
    now[0] = T0 + 1000
    assert live.snapshot()["events_per_s"] == 0


def test_a_delivered_batch_feeds_it_once_per_batch() -> None:
    live = LiveState()
    live.on_delivered(Delivered("enriched", 3, T0, labels=["a", "b", "a"], latencies_s=[0.010, 0.020, 0.030]))
    live.on_delivered(Delivered("deferred", 2, T0))  # not enriched here: not counted
    live.on_delivered(Delivered("dlq", 1, T0, reasons=["not_json"]))
    live.on_delivered(Delivered("summary", 1, T0, latencies_s=[0.5], records=[{"key": "k"}]))
    live.on_delivered(Delivered("alert", 1, T0, records=[{"label": "a"}]))
    live.on_delivered(Delivered("stats", 1, T0, records=[{"events": 3}]))
    snap = live.snapshot(T0 + 1)
    assert snap["events_total"] == 3
    assert snap["labels"] == ["a", "b"]
    assert snap["latency_ms"]["p50"] == pytest.approx(20, rel=0.02)
    assert (snap["summaries"], snap["alerts"], snap["stats"]) == ([{"key": "k"}], [{"label": "a"}], [{"events": 3}])


def test_a_window_shows_only_its_highest_revision() -> None:
    live = LiveState()
    w = {"start_ms": 1000, "end_ms": 2000, "part": 0}

    def stats(revision: int, final: bool, events: int) -> dict:
        return {"window": w, "events": events, "sources": {}, "revision": revision, "final": final}

    live.add_stats(stats(1, False, 5))
    live.add_stats(stats(2, True, 9))
    live.add_stats(stats(2, True, 9))  # a duplicate after a crash
    live.add_stats(stats(3, False, 4))  # a final record outranks any non-final one
    live.add_summary({"key": "k", "window": w, "summary": "s", "revision": 7, "final": True})
    live.add_summary({"key": "k", "window": w, "summary": "partial re-read", "revision": 3, "final": True})
    snap = live.snapshot(T0)
    assert [(s["revision"], s["events"]) for s in snap["stats"]] == [(2, 9)]
    assert [s["summary"] for s in snap["summaries"]] == ["s"]
