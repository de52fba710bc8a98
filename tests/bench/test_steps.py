"""The step plan, the per-step summary (percentiles with unanswered events) and when to stop stepping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.steps import (
    StepResult,
    keep_stepping,
    parse_rates,
    percentile_with_missing,
    plan_steps,
    saturated,
    summarize_step,
)


def test_plan_steps_sorted_with_warmup_and_measured_counts() -> None:
    plans = plan_steps([300, 100, 100, 200], seconds=20, warmup_s=5)
    assert [p.rate for p in plans] == [100, 200, 300]
    assert [(p.warmup_events, p.measured_events, p.total) for p in plans] == [
        (500, 2000, 2500),
        (1000, 4000, 5000),
        (1500, 6000, 7500),
    ]
    assert plan_steps([0.5], seconds=1, warmup_s=0)[0].measured_events == 1  # never an empty step


@pytest.mark.parametrize("bad", [[], [0], [-5, 100]])
def test_plan_steps_refuses_no_or_bad_rates(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        plan_steps(bad, seconds=1, warmup_s=0)


def test_parse_rates() -> None:
    assert parse_rates("400, 100,200,100") == [100.0, 200.0, 400.0]
    for bad in ("", "100,x", "100,-1", "0", "inf"):
        with pytest.raises(ValueError, match="rates"):
            parse_rates(bad)


@pytest.mark.parametrize("q", [0, 50, 95, 99, 100])
def test_percentile_without_missing_matches_numpy(q: float) -> None:
    values = [12.0, 3.0, 7.0, 250.0, 41.0, 8.0, 8.0]
    assert percentile_with_missing(values, 0, q) == pytest.approx(float(np.percentile(values, q)))


def test_missing_results_count_as_infinitely_late() -> None:
    values = [float(v) for v in range(1, 100)]  # 99 answered
    assert percentile_with_missing(values, 1, 50) == pytest.approx(50.5)  # as numpy over 1..99 and inf
    assert percentile_with_missing(values, 1, 99) == math.inf  # interpolates towards the missing one
    assert percentile_with_missing(values, 0, 99) < math.inf
    assert percentile_with_missing([], 3, 50) == math.inf
    assert math.isnan(percentile_with_missing([], 0, 50))
    with pytest.raises(ValueError):
        percentile_with_missing([1.0], 0, 101)


def test_summarize_step_measures_from_scheduled_send_and_ignores_other_ids() -> None:
    # 10 events scheduled 10 ms apart (100/s), each read 20 ms after its send, one of them 400 ms after
    scheduled = {f"e{i}".encode(): 1_000_000.0 + 10.0 * i for i in range(10)}
    read = {k: t + 20.0 for k, t in scheduled.items()}
    read[b"e3"] = scheduled[b"e3"] + 400.0
    read[b"warm-up"] = 5.0  # not measured: ignored
    s = summarize_step(100.0, scheduled, read, 250.0, backlog_at_end=2, worst_send_lag_ms=1.5)
    assert (s.sent, s.received, s.missing) == (10, 10, 0)
    assert s.p50_ms == pytest.approx(20.0)
    assert s.max_ms == pytest.approx(400.0)
    assert s.deadline_misses == 1
    # first send at t0, last read: e3's, at t0 + 30 + 400 ms: 10 results in 0.43 s
    assert s.achieved_rate == pytest.approx(10 / 0.43)
    assert s.as_dict()["backlog_at_end"] == 2 and s.as_dict()["worst_send_lag_ms"] == 1.5


def test_summarize_step_counts_unanswered_events_as_misses() -> None:
    scheduled = {b"a": 0.0, b"b": 10.0}
    s = summarize_step(100.0, scheduled, {b"a": 30.0}, 250.0)
    assert (s.received, s.missing, s.deadline_misses) == (1, 1, 1)
    assert s.p99_ms == math.inf and s.max_ms == math.inf
    nothing = summarize_step(100.0, scheduled, {}, 250.0)
    assert nothing.achieved_rate == 0.0 and nothing.p50_ms == math.inf


def _step(offered: float, achieved: float, p99: float, missing: int = 0) -> StepResult:
    return StepResult(offered, 100, 100 - missing, achieved, p99 / 2, p99, p99, p99, 0, 0, 0.0)


def test_saturated() -> None:
    assert not saturated(_step(100, 99, 200), 250)
    assert saturated(_step(100, 99, 260), 250)  # p99 over the budget
    assert saturated(_step(100, 80, 100), 250)  # fell well behind the offered rate
    assert saturated(_step(100, 99, 100, missing=1), 250)  # lost or stranded results
    assert saturated(_step(100, 99, math.nan), 250)


def test_keep_stepping_until_past_saturation() -> None:
    ok, bad = _step(100, 100, 50), _step(200, 150, 900)
    assert keep_stepping([ok], 250, past_saturation=0)
    assert not keep_stepping([ok, bad], 250, past_saturation=0)
    assert keep_stepping([ok, bad], 250, past_saturation=1)
    assert not keep_stepping([ok, bad, bad], 250, past_saturation=1)
