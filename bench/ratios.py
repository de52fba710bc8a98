"""The comparison's headline figures (pure): max throughput within the budget, p99 at an equal rate, ratios.

- max rate within budget: the highest achieved events/s among the steps whose p99 met the budget and lost
  nothing (0 when none did);
- p99 at equal rate: both systems' p99 at the highest offered rate at which the *other* system still met
  the budget (at our best rate when it never did: the first step both ran) — "at equal or lower p99";
- ours / ceiling: our max rate within budget / the bare model's texts/s at our batch size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from bench.steps import StepResult, saturated


def max_rate_within(steps: Sequence[StepResult], budget_ms: float) -> float:
    return max((s.achieved_rate for s in steps if not s.missing and s.p99_ms <= budget_ms), default=0.0)


def step_at(steps: Sequence[StepResult], offered_rate: float) -> StepResult | None:
    return next((s for s in steps if s.offered_rate == offered_rate), None)


def equal_rate(ours: Sequence[StepResult], other: Sequence[StepResult], budget_ms: float) -> float | None:
    """The offered rate to compare p99 at: the highest one both ran at which `other` was not saturated,
    else the lowest one both ran; None when they share no rate."""
    common = sorted({s.offered_rate for s in ours} & {s.offered_rate for s in other})
    if not common:
        return None
    ok = [r for r in common if not saturated(step_at(other, r), budget_ms)]  # type: ignore[arg-type]
    return ok[-1] if ok else common[0]


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(b) and math.isfinite(a) else math.nan


def compare(
    ours: Sequence[StepResult],
    others: Mapping[str, Sequence[StepResult]],
    budget_ms: float,
    ceiling_texts_per_s: float,
) -> dict[str, dict[str, float | None]]:
    """ours / ceiling, and ours / each other system: throughput ratio (higher is better) and p99 at equal
    rate (ours and theirs, and their ratio: lower is better)."""
    best = max_rate_within(ours, budget_ms)
    out: dict[str, dict[str, float | None]] = {}
    if ceiling_texts_per_s > 0:  # 0: the bare model was not measured
        out["ceiling"] = {
            "ours_max_rate": best,
            "other_max_rate": ceiling_texts_per_s,
            "throughput_ratio": _ratio(best, ceiling_texts_per_s),
        }
    for name, steps in others.items():
        theirs = max_rate_within(steps, budget_ms)
        r = equal_rate(ours, steps, budget_ms)
        a = step_at(ours, r) if r is not None else None
        b = step_at(steps, r) if r is not None else None
        out[name] = {
            "ours_max_rate": best,
            "other_max_rate": theirs,
            "throughput_ratio": _ratio(best, theirs),
            "equal_rate": r,
            "ours_p99_ms": a.p99_ms if a else None,
            "other_p99_ms": b.p99_ms if b else None,
            "p99_ratio": _ratio(a.p99_ms, b.p99_ms) if a and b else None,
        }
    return out


# ---- bench identity: one blast of N events through each system ------------------------------------------------
def identity_ratios(systems: Mapping[str, Mapping[str, float]], ours: str) -> dict[str, dict[str, float]]:
    """ours / each other system, from `run_drain`'s results: events/s first output → last and steady
    (higher is better), and the system's process CPU µs per event (lower is better). NaN where either
    side is missing or zero."""
    if ours not in systems:
        return {}
    a = systems[ours]
    keys = ("events_per_s", "steady_events_per_s", "system_cpu_us_per_event")
    return {
        name: {k: _ratio(a.get(k, math.nan), b.get(k, math.nan)) for k in keys}
        for name, b in systems.items()
        if name != ours
    }
