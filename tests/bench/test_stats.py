"""bench/stats.py and bench/events.py: the pure helpers of `slmstream bench classify` (the benchmark itself
is run by hand, not here)."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from bench.events import cycled_texts, ids_with_prefix, make_events
from bench.stats import (
    ResultTiming,
    batch_breakdown,
    best_rate,
    half_rate,
    latency_parts,
    percentile,
    rate,
    schedule_time,
    steady_rate,
    summarize,
    verdicts,
)

DOCS = [
    {"id": "evt-1", "text": "charged twice", "key": "cust-1", "attrs": {"expected_label": "billing"}},
    {"id": "evt-2", "text": "where is my parcel", "source": "email", "ts": 1764000000000},
    {"text": "love it"},
]


@pytest.mark.parametrize("q", [0, 1, 25, 50, 95, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 2.0, 100.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edge_cases() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([4.0], 99) == 4.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize() -> None:
    s = summarize([float(v) for v in range(1, 101)])
    assert s["n"] == 100
    assert s["mean"] == pytest.approx(50.5)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p99"] == pytest.approx(99.01)
    assert s["max"] == 100.0
    empty = summarize([])
    assert empty["n"] == 0 and math.isnan(empty["p99"]) and math.isnan(empty["mean"])


def test_rates() -> None:
    assert rate(300, 2.0) == 150.0
    assert rate(10, 0.0) == 0.0
    assert best_rate(100, [2.0, 0.5, 1.0]) == 200.0
    assert best_rate(100, []) == 0.0
    assert half_rate(314.0) == 157.0
    assert half_rate(0.5) == 1.0  # never an open loop at zero events/s


def test_open_loop_schedule() -> None:
    # send i is due at start + i / rate (the sender in tests/bench/test_loadgen.py)
    assert schedule_time(10.0, 0, 100.0) == 10.0
    assert schedule_time(10.0, 50, 100.0) == pytest.approx(10.5)


def test_steady_rate_ignores_ramp_and_tail() -> None:
    # 100 results: 10 trickle in over 5 s, then 80 at 100/s, then a slow tail
    times = [i * 0.5 for i in range(10)] + [5.0 + i * 0.01 for i in range(80)] + [5.8 + i for i in range(10)]
    assert steady_rate(times) == pytest.approx(80 / 0.8, rel=0.02)
    assert steady_rate([1.0, 2.0]) == 0.0  # too few to say


def test_verdicts() -> None:
    ratio, p99 = verdicts(375.0, 314.0, 122.0)
    assert ratio.value == pytest.approx(314 / 375) and ratio.met
    assert p99.met and not p99.higher_is_better
    ratio, p99 = verdicts(375.0, 250.0, 342.0)
    assert not ratio.met and not p99.met
    assert p99.as_dict() == {"value": 342.0, "target": 250.0, "op": "<=", "met": False}
    assert not verdicts(0.0, 100.0, math.nan)[0].met  # no bare figure: no ratio, no pass
    assert not verdicts(375.0, 314.0, math.nan)[1].met


def test_events_are_valid_json_with_the_send_time() -> None:
    events = make_events(DOCS, 7, "tp")
    assert [e.id for e in events] == [f"tp-{i:06d}".encode() for i in range(7)]
    doc = orjson.loads(events[1].encode(1764000012345))
    assert doc["ts"] == 1764000012345  # the sample's own ts is replaced, not duplicated
    assert doc["id"] == "tp-000001" and doc["text"] == "where is my parcel" and doc["source"] == "email"
    first = orjson.loads(events[0].encode(1))
    assert first["attrs"] == {"expected_label": "billing"}
    assert events[0].key == b"cust-1" and events[2].key is None
    assert orjson.loads(events[3].encode(5))["text"] == "charged twice"  # cycled
    assert events[1].encode(1).count(b'"ts"') == 1


def test_cycled_texts_are_what_the_pipeline_gets() -> None:
    texts = cycled_texts(DOCS, 7)
    assert texts == [orjson.loads(e.encode(1))["text"] for e in make_events(DOCS, 7, "x")]


def test_ids_with_prefix() -> None:
    keys = [b"tp-000001", b"tp-000001", b"lat-000001", None, b"tpx-1", b"wu-000000"]
    assert ids_with_prefix(keys, "tp") == {b"tp-000001"}


def test_batch_breakdown_and_latency_parts() -> None:
    # two batches: 3 events finished together at t=1100 ms (model 30 ms), 1 event at t=1200 (model 10 ms)
    rows = [
        ResultTiming(1000.0, 100.0, 50.0, 30.0, 1110.0),
        ResultTiming(1010.0, 90.0, 40.0, 30.0, 1115.0),
        ResultTiming(1020.0, 80.0, 30.0, 30.0, 1110.0),
        ResultTiming(1150.0, 50.0, 20.0, 10.0, None),
    ]
    b = batch_breakdown(rows, wall_s=0.2)
    assert b["batches"] == 2
    assert b["mean_batch"] == 2.0
    assert b["model_busy_s"] == pytest.approx(0.04)
    assert b["model_busy_share"] == pytest.approx(0.2)
    assert b["texts_per_model_s"] == pytest.approx(100.0)
    # the second batch started at 1200 - 10 = 1190 ms, 90 ms after the first one finished
    assert b["idle_between_batches_ms"]["n"] == 1
    assert b["idle_between_batches_ms"]["p50"] == pytest.approx(90.0)
    parts = latency_parts(rows)
    assert parts["to_worker"]["max"] == 20.0  # 100 - 50 - 30
    assert parts["delivery"]["n"] == 3  # read time unknown for the last one
    assert parts["delivery"]["max"] == 15.0
    assert parts["worker_total"]["p50"] == 85.0
