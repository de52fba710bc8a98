"""The comparison's headline figures: max rate within the budget, p99 at an equal rate, the ratios."""

from __future__ import annotations

import math

import pytest

from bench.ratios import compare, equal_rate, identity_ratios, max_rate_within
from bench.steps import StepResult

BUDGET = 250.0


def _step(offered: float, achieved: float, p99: float, missing: int = 0) -> StepResult:
    return StepResult(offered, 100, 100 - missing, achieved, p99 / 2, p99, p99, p99, 0, 0, 0.0)


OURS = [_step(100, 100, 60), _step(200, 199, 80), _step(300, 297, 150), _step(400, 330, 4000)]
NAIVE = [_step(100, 100, 90), _step(200, 170, 2500), _step(300, 175, 9000)]


def test_max_rate_within_budget_skips_slow_and_lossy_steps() -> None:
    assert max_rate_within(OURS, BUDGET) == 297
    assert max_rate_within(NAIVE, BUDGET) == 100
    assert max_rate_within([_step(100, 100, 50, missing=1)], BUDGET) == 0.0
    assert max_rate_within([], BUDGET) == 0.0


def test_equal_rate_is_the_others_best_unsaturated_rate() -> None:
    assert equal_rate(OURS, NAIVE, BUDGET) == 100
    assert equal_rate(OURS, OURS[:3], BUDGET) == 300
    # the other never met the budget: compare at the first rate both ran
    assert equal_rate(OURS, [_step(200, 120, 900), _step(300, 120, 900)], BUDGET) == 200
    assert equal_rate(OURS, [_step(50, 50, 10)], BUDGET) is None


def test_compare_ratios() -> None:
    r = compare(OURS, {"naive": NAIVE}, BUDGET, ceiling_texts_per_s=330.0)
    assert r["ceiling"]["throughput_ratio"] == pytest.approx(297 / 330)
    n = r["naive"]
    assert n["ours_max_rate"] == 297 and n["other_max_rate"] == 100
    assert n["throughput_ratio"] == pytest.approx(2.97)
    assert (n["equal_rate"], n["ours_p99_ms"], n["other_p99_ms"]) == (100, 60, 90)
    assert n["p99_ratio"] == pytest.approx(60 / 90)


def test_compare_without_ceiling_or_common_rate() -> None:
    r = compare(OURS, {"peer": [_step(50, 50, 10)]}, BUDGET, ceiling_texts_per_s=0.0)
    assert "ceiling" not in r
    assert r["peer"]["equal_rate"] is None and r["peer"]["p99_ratio"] is None
    zero = compare(OURS, {"peer": [_step(100, 60, 900)]}, BUDGET, 0.0)["peer"]
    assert math.isnan(zero["throughput_ratio"])  # the peer never met the budget: no finite ratio


def _drained(eps: float, steady: float, cpu_us: float) -> dict[str, float]:
    return {"events_per_s": eps, "steady_events_per_s": steady, "system_cpu_us_per_event": cpu_us}


def test_identity_ratios_are_ours_over_each_other_system() -> None:
    systems = {
        "aiokafka": _drained(40_000, 50_000, 20.0),
        "quix": _drained(20_000, 25_000, 40.0),
        "identity": _drained(10_000, 12_500, 30.0),
    }
    r = identity_ratios(systems, "identity")
    assert set(r) == {"aiokafka", "quix"}
    assert r["aiokafka"]["events_per_s"] == pytest.approx(0.25)
    assert r["aiokafka"]["steady_events_per_s"] == pytest.approx(0.25)
    assert r["aiokafka"]["system_cpu_us_per_event"] == pytest.approx(1.5)
    assert r["quix"]["events_per_s"] == pytest.approx(0.5)
    assert r["quix"]["system_cpu_us_per_event"] == pytest.approx(0.75)


def test_identity_ratios_without_ours_or_with_a_zero_peer() -> None:
    assert identity_ratios({"quix": _drained(1, 1, 1)}, "identity") == {}
    r = identity_ratios({"identity": _drained(10, 10, 10), "naive": _drained(0, 0, 0)}, "identity")
    assert all(math.isnan(v) for v in r["naive"].values())
