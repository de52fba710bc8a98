"""Spike rules against a rolling baseline."""

from __future__ import annotations

import math

import pytest

from pipeline.analytics.alerts import SpikeDetector


def feed(d: SpikeDetector, windows: list[dict[str, int]]) -> list:
    out = []
    for counts in windows:
        out.append(d.check(counts))
    return out


def test_no_alert_before_the_baseline_has_enough_windows() -> None:
    d = SpikeDetector(baseline_windows=5, min_baseline_windows=3, min_count=5, ratio=3.0, z=None)
    assert feed(d, [{"billing": 100}, {"billing": 2}, {"billing": 50}]) == [[], [], []]


def test_ratio_rule_with_min_count_and_evidence() -> None:
    d = SpikeDetector(baseline_windows=3, min_baseline_windows=3, min_count=5, ratio=3.0, z=None)
    feed(d, [{"billing": 2}, {"billing": 4}, {"billing": 3}])
    (spike,) = d.check({"billing": 9, "praise": 1}, {"billing": ["a", "b", "c", "d", "e", "f"]})
    assert spike.label == "billing" and spike.count == 9 and spike.rule == "ratio"
    assert spike.mean == pytest.approx(3.0) and spike.windows == 3
    assert spike.std == pytest.approx(math.sqrt(2 / 3))
    assert spike.ratio == pytest.approx(3.0)
    assert spike.sample_ids == ["a", "b", "c", "d", "e"]


def test_below_min_count_never_alerts() -> None:
    d = SpikeDetector(baseline_windows=3, min_baseline_windows=3, min_count=5, ratio=3.0, z=3.0)
    feed(d, [{}, {}, {}])
    assert d.check({"billing": 4}) == []  # 4x the floor of 1, but under min_count
    assert [s.label for s in d.check({"billing": 5})] == ["billing"]


def test_a_label_absent_from_the_baseline_counts_zero_and_ratio_uses_a_floor_of_one() -> None:
    d = SpikeDetector(baseline_windows=3, min_baseline_windows=1, min_count=5, ratio=3.0, z=None)
    d.check({"praise": 10})
    (spike,) = d.check({"billing": 6})
    assert spike.mean == 0 and spike.ratio == 6 and spike.z is None


def test_z_rule_fires_on_a_high_volume_label_that_the_ratio_misses() -> None:
    d = SpikeDetector(baseline_windows=4, min_baseline_windows=4, min_count=5, ratio=3.0, z=3.0)
    feed(d, [{"billing": 100}, {"billing": 80}, {"billing": 120}, {"billing": 100}])  # mean 100, std ~14.1
    (spike,) = d.check({"billing": 150})  # 1.5x: below the ratio, 3.5 std above
    assert spike.rule == "z" and spike.z == pytest.approx(50 / math.sqrt(200))


def test_z_uses_the_poisson_spread_when_the_baseline_is_too_steady() -> None:
    d = SpikeDetector(baseline_windows=4, min_baseline_windows=4, min_count=5, ratio=None, z=3.0)
    feed(d, [{"billing": 20}, {"billing": 21}, {"billing": 19}, {"billing": 20}])  # std 0.7, sqrt(mean) 4.5
    assert d.check({"billing": 26}) == []  # 8.5 sample stds, but only 1.3 of a count's natural noise
    (spike,) = d.check({"billing": 36})  # baseline now 21, 19, 20, 26: mean 21.5, std 2.7 < sqrt(21.5)
    assert spike.z == pytest.approx((36 - 21.5) / math.sqrt(21.5))


def test_baseline_rolls_over_the_last_k_windows() -> None:
    d = SpikeDetector(baseline_windows=2, min_baseline_windows=2, min_count=1, ratio=3.0, z=None)
    feed(d, [{"billing": 100}, {"billing": 1}, {"billing": 1}])  # the 100 has rolled out
    assert d.baseline("billing") == (1.0, 0.0, 2)
    assert [s.rule for s in d.check({"billing": 3})] == ["ratio"]


def test_a_spike_joins_the_baseline_so_a_steady_new_level_stops_alerting() -> None:
    d = SpikeDetector(baseline_windows=2, min_baseline_windows=1, min_count=1, ratio=3.0, z=None)
    d.check({"billing": 2})
    assert d.check({"billing": 10}) != []
    d.check({"billing": 10})
    assert d.check({"billing": 10}) == []


def test_needs_a_rule() -> None:
    with pytest.raises(ValueError):
        SpikeDetector(ratio=None, z=None)


def test_a_window_kept_out_of_the_baseline_is_still_checked() -> None:
    d = SpikeDetector(baseline_windows=3, min_baseline_windows=1, min_count=1, ratio=3.0, z=None)
    d.check({"billing": 1}, join_baseline=False)  # a partial first window
    assert d.baseline("billing") == (0.0, 0.0, 0)
    d.check({"billing": 10})
    assert d.check({"billing": 10}) == []
