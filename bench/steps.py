"""Rate steps of the comparison (pure: no I/O, no clock): the plan, the summary of a step, when to stop.

A step offers a fixed rate for `warmup_s + seconds`: the first `warmup_s` of sends are not measured (the
system settles at the new rate), the rest are. Latency is read time − scheduled send time, so a system
that falls behind shows it as latency (no coordinated omission); a result never read counts as infinitely
late, so a system that loses or strands events cannot look fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bench.stats import rate

SATURATION_SHARE = 0.9  # achieved < 90% of the offered rate: the system no longer keeps up


@dataclass(frozen=True, slots=True)
class StepPlan:
    rate: float  # offered events/s
    warmup_events: int  # sent first, not measured
    measured_events: int

    @property
    def total(self) -> int:
        return self.warmup_events + self.measured_events


def plan_steps(rates: Iterable[float], seconds: float, warmup_s: float) -> list[StepPlan]:
    """One step per rate, in increasing order; at least one measured event per step."""
    out = []
    for r in sorted(set(rates)):
        if r <= 0:
            raise ValueError(f"rates must be > 0 events/s, got {r}")
        out.append(StepPlan(r, int(round(r * warmup_s)), max(1, int(round(r * seconds)))))
    if not out:
        raise ValueError("give at least one rate")
    return out


def parse_rates(text: str) -> list[float]:
    """'100,200,400' → [100.0, 200.0, 400.0]; a clear ValueError for anything else."""
    try:
        rates = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"rates must be comma-separated numbers (events/s), got {text!r}") from None
    if not rates or any(r <= 0 or not math.isfinite(r) for r in rates):
        raise ValueError(f"rates must be positive numbers (events/s), got {text!r}")
    return sorted(set(rates))


def percentile_with_missing(values: Sequence[float], missing: int, q: float) -> float:
    """The q-th percentile (linear interpolation, as numpy) of `values` plus `missing` values of +inf."""
    n = len(values) + missing
    if n == 0:
        return math.nan
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    xs = sorted(values) + [math.inf] * missing
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    if frac == 0.0 or xs[hi] == xs[lo]:
        return xs[lo]
    if math.isinf(xs[hi]):
        return math.inf
    return xs[lo] + (xs[hi] - xs[lo]) * frac


@dataclass(frozen=True)
class StepResult:
    offered_rate: float
    sent: int  # measured events sent
    received: int  # of them, results read
    achieved_rate: float  # results read / (first measured send → last result read)
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    deadline_misses: int  # results later than the budget, plus results never read
    backlog_at_end: int  # events sent (whole step) but not answered when sending stopped
    worst_send_lag_ms: float  # how far the sender fell behind its schedule (high: the bench itself is slow)

    @property
    def missing(self) -> int:
        return self.sent - self.received

    def as_dict(self) -> dict[str, float | int]:
        return {
            "offered_rate": self.offered_rate,
            "sent": self.sent,
            "received": self.received,
            "missing": self.missing,
            "achieved_rate": self.achieved_rate,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "deadline_misses": self.deadline_misses,
            "backlog_at_end": self.backlog_at_end,
            "worst_send_lag_ms": self.worst_send_lag_ms,
        }


def summarize_step(
    offered_rate: float,
    scheduled_ms: Mapping[bytes, float],
    read_ms: Mapping[bytes, float],
    budget_ms: float,
    *,
    backlog_at_end: int = 0,
    worst_send_lag_ms: float = 0.0,
) -> StepResult:
    """Latencies of the measured events `scheduled_ms` (id → scheduled send, epoch ms) from `read_ms`
    (id → when its result was read; ids of other events are ignored)."""
    lat = [read_ms[i] - t for i, t in scheduled_ms.items() if i in read_ms]
    sent, received = len(scheduled_ms), len(lat)
    missing = sent - received
    if received:
        first_send = min(scheduled_ms.values())
        last_read = max(read_ms[i] for i in scheduled_ms if i in read_ms)
        achieved = rate(received, (last_read - first_send) / 1000.0)
    else:
        achieved = 0.0
    return StepResult(
        offered_rate,
        sent,
        received,
        achieved,
        percentile_with_missing(lat, missing, 50),
        percentile_with_missing(lat, missing, 95),
        percentile_with_missing(lat, missing, 99),
        math.inf if missing else (max(lat) if lat else math.nan),
        sum(1 for x in lat if x > budget_ms) + missing,
        backlog_at_end,
        worst_send_lag_ms,
    )


def saturated(step: StepResult, budget_ms: float) -> bool:
    """The system did not keep up: p99 over the budget, results missing, or well under the offered rate."""
    return (
        step.missing > 0
        or not step.p99_ms <= budget_ms  # NaN counts as over
        or step.achieved_rate < SATURATION_SHARE * step.offered_rate
    )


def keep_stepping(steps: Sequence[StepResult], budget_ms: float, past_saturation: int) -> bool:
    """Go on to the next rate until `past_saturation` saturated steps were run (0: stop at the first)."""
    return sum(saturated(s, budget_ms) for s in steps) <= past_saturation
