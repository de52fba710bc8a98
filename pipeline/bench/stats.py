"""Pure helpers of the benchmark: no I/O, no clock (tested in tests/pipeline/cli/test_bench.py)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

RATIO_TARGET = 0.8  # pipeline events/s >= 0.8 x bare-model texts/s
P99_TARGET_MS = 250.0  # end-to-end p99 at half the max rate


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values_ms: Sequence[float]) -> dict[str, float]:
    """n, mean, p50, p95, p99, max of a list of latencies (ms); NaN fields when empty."""
    n = len(values_ms)
    return {
        "n": n,
        "mean": sum(values_ms) / n if n else math.nan,
        "p50": percentile(values_ms, 50),
        "p95": percentile(values_ms, 95),
        "p99": percentile(values_ms, 99),
        "max": max(values_ms) if n else math.nan,
    }


def rate(count: int, seconds: float) -> float:
    """count / seconds; 0 when no time passed (never divide by zero)."""
    return count / seconds if seconds > 0 else 0.0


def best_rate(count: int, durations_s: Iterable[float]) -> float:
    """Items/s of the fastest repeat (each repeat processed `count` items)."""
    return max((rate(count, d) for d in durations_s), default=0.0)


def half_rate(max_rate: float, floor: float = 1.0) -> float:
    """The latency step's offered load: half the measured maximum, never below `floor` events/s."""
    return max(max_rate / 2.0, floor)


def open_loop_due(elapsed_s: float, rate_per_s: float, total: int) -> int:
    """How many sends an open-loop producer should have made `elapsed_s` after its start.

    Send i is scheduled at i / rate, so at t the sends 0..floor(t*rate) are due; never more than `total`.
    """
    if elapsed_s < 0:
        return 0
    return min(total, math.floor(elapsed_s * rate_per_s + 1e-9) + 1)


def schedule_time(start_s: float, i: int, rate_per_s: float) -> float:
    """Scheduled send time of the i-th message of an open-loop run."""
    return start_s + i / rate_per_s


def steady_rate(receive_times: Sequence[float], lo: float = 0.1, hi: float = 0.9) -> float:
    """Rate between the lo and hi quantiles of the receive times: the throughput without ramp-up and tail."""
    n = len(receive_times)
    if n < 10:
        return 0.0
    xs = sorted(receive_times)
    i, j = int(n * lo), min(int(n * hi), n - 1)
    return rate(j - i, xs[j] - xs[i])


@dataclass(frozen=True)
class Verdict:
    name: str
    value: float
    target: float
    higher_is_better: bool

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def as_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "target": self.target,
            "op": ">=" if self.higher_is_better else "<=",
            "met": self.met,
        }


def verdicts(
    bare_rate: float,
    pipeline_rate: float,
    p99_ms: float,
    *,
    ratio_target: float = RATIO_TARGET,
    p99_target_ms: float = P99_TARGET_MS,
) -> list[Verdict]:
    ratio = pipeline_rate / bare_rate if bare_rate > 0 else math.nan
    return [
        Verdict("pipeline / bare model", ratio, ratio_target, True),
        Verdict("p99 end-to-end at half max rate (ms)", p99_ms, p99_target_ms, False),
    ]


def histogram_delta(before: Mapping[str, float], after: Mapping[str, float], name: str) -> tuple[float, float]:
    """(sum, count) added to the Prometheus histogram `name` between two scrapes (all label sets together)."""

    def total(samples: Mapping[str, float], suffix: str) -> float:
        key = name + suffix
        return sum(v for k, v in samples.items() if k == key or k.startswith(key + "{"))

    return (
        total(after, "_sum") - total(before, "_sum"),
        total(after, "_count") - total(before, "_count"),
    )


def parse_prometheus(text: str) -> dict[str, float]:
    """`name{labels} value` lines → {"name{labels}": value}; comments and malformed lines skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out
