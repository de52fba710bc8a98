"""Pure helpers of the benchmark: no I/O, no clock (tested in tests/pipeline/cli/test_bench.py)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
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


@dataclass(frozen=True, slots=True)
class ResultTiming:
    """The timing fields of one enriched record (ms): analysis.latency_ms and the event's `ts`."""

    ts_ms: float
    total_ms: float  # event time → result ready in the worker (before it is produced)
    queue_ms: float  # arrival in the worker → its batch starts
    model_ms: float  # the batch's model call
    read_ms: float | None = None  # epoch ms when the bench read the result (None: unknown)


def batch_breakdown(rows: Sequence[ResultTiming], wall_s: float) -> dict[str, float]:
    """Batches rebuilt from the records: those of one batch share the model time and the moment it finished
    (ts + total). Gives the batch count and size, how busy the model was, and its speed inside the worker."""
    batches: dict[tuple[float, float], int] = {}
    for r in rows:
        key = (round(r.model_ms, 2), round(r.ts_ms + r.total_ms, 1))
        batches[key] = batches.get(key, 0) + 1
    model_s = sum(model_ms for model_ms, _ in batches) / 1000.0
    n = len(rows)
    # Model idle between consecutive batches: next (finish - model time) - previous finish. Under a backlog
    # this is the worker's own time between model calls (results, sends, the next batch); else waiting too.
    ends = sorted((done, model_ms) for model_ms, done in batches)
    gaps = [max(done - model_ms - prev, 0.0) for (prev, _), (done, model_ms) in zip(ends, ends[1:], strict=False)]
    return {
        "idle_between_batches_ms": summarize(gaps),
        "batches": len(batches),
        "mean_batch": n / len(batches) if batches else 0.0,
        "model_busy_s": model_s,
        "model_busy_share": model_s / wall_s if wall_s > 0 else 0.0,
        "texts_per_model_s": n / model_s if model_s > 0 else 0.0,
        "mean_model_ms_per_batch": 1000.0 * model_s / len(batches) if batches else 0.0,
    }


def latency_parts(rows: Sequence[ResultTiming]) -> dict[str, dict[str, float]]:
    """Where an event's time goes (ms): before the worker's batcher (producer, broker, Faust fetch, validation),
    waiting for its batch, the model, and after (produce the result, broker, the reader's fetch)."""
    parts: dict[str, list[float]] = {"to_worker": [], "queue": [], "model": [], "worker_total": [], "delivery": []}
    for r in rows:
        parts["to_worker"].append(r.total_ms - r.queue_ms - r.model_ms)
        parts["queue"].append(r.queue_ms)
        parts["model"].append(r.model_ms)
        parts["worker_total"].append(r.total_ms)
        if r.read_ms is not None:
            parts["delivery"].append(r.read_ms - r.ts_ms - r.total_ms)
    return {k: summarize(v) for k, v in parts.items() if v}
