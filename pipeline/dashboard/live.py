"""What the live dashboard shows, kept in the worker's memory: recent throughput, latency and label mix, plus
the latest summaries, alerts and stats records (of a window revised, the highest revision only).

One `LiveState` per worker, created by the worker's assembly and passed to the scheduler and the window
analytics as an observer (`on_delivered`, once per batch the broker holds) and to the web pages, where
`/api/live` serves `snapshot()`. Its clock is injectable (default `time.time`), so a test can drive it.

Memory is bounded whatever the event rate: one bucket per second over the last `window_s` seconds (an event
count, a count per label, and a sparse log-scale latency histogram), and the last `keep_records` records of
each kind. Every method runs on the event loop only, so no locks; `observe_enriched` is O(1) (a dict bump and
a log), the work is in `snapshot`, called about once a second per open page.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.analytics.records import record_identity, record_rank
from pipeline.output.observers import BaseObserver, Delivered

WINDOW_S = 300  # how far back the per-second buckets reach: the label-mix chart's span
RATE_WINDOW_S = 10  # events/s headline: the last 10 s
RATE_SERIES_S = 60  # per-second events/s series: the last minute
LATENCY_WINDOW_S = 60  # latency percentiles: the last minute
MIX_BUCKET_S = 5  # label mix over time: 5 s buckets
KEEP_RECORDS = 20  # latest summaries / alerts / stats kept
KEEP_RECENT = 12  # latest enriched events shown for correction (id, label, the start of the text)
RECENT_TEXT_CHARS = 280

# Latency histogram: bin i holds [LAT_BASE**i, LAT_BASE**(i+1)) ms, so a percentile read back from a bin's
# geometric middle is within 1% of the true value. Values under 0.1 ms share bin LAT_MIN_BIN.
LAT_BASE = 1.02
_LOG_BASE = math.log(LAT_BASE)
LAT_MIN_BIN = math.floor(math.log(0.1) / _LOG_BASE)


def _bin_of(ms: float) -> int:
    if not ms > 0.1:  # also catches NaN
        return LAT_MIN_BIN
    return max(LAT_MIN_BIN, math.floor(math.log(ms) / _LOG_BASE))


def _bin_value(b: int) -> float:
    """The geometric middle of a bin, in ms."""
    return math.pow(LAT_BASE, b + 0.5)


@dataclass(slots=True)
class _Second:
    """Everything observed during one wall-clock second."""

    second: int
    count: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    latency_bins: dict[int, int] = field(default_factory=dict)


def _percentiles(bins: dict[int, int], qs: tuple[float, ...]) -> list[float | None]:
    total = sum(bins.values())
    if total == 0:
        return [None for _ in qs]
    ordered = sorted(bins.items())
    out: list[float | None] = []
    for q in qs:
        rank = max(1, math.ceil(q * total))  # nearest-rank percentile
        seen = 0
        for b, n in ordered:
            seen += n
            if seen >= rank:
                out.append(round(_bin_value(b), 1))
                break
    return out


class LiveState(BaseObserver):
    """Recent activity of this worker for the dashboard. Times are wall-clock seconds (`clock`, time.time())."""

    def __init__(
        self,
        window_s: int = WINDOW_S,
        keep_records: int = KEEP_RECORDS,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s < max(RATE_SERIES_S, LATENCY_WINDOW_S, MIX_BUCKET_S):
            raise ValueError(f"window_s must be at least {max(RATE_SERIES_S, LATENCY_WINDOW_S)} s")
        self.window_s = window_s
        self.clock = clock
        self._seconds: deque[_Second] = deque()
        self._first_seen: float | None = None
        self.events_total = 0
        self.summaries: deque[dict[str, Any]] = deque(maxlen=keep_records)
        self.alerts: deque[dict[str, Any]] = deque(maxlen=keep_records)
        self.stats: deque[dict[str, Any]] = deque(maxlen=keep_records)
        self.recent: deque[dict[str, Any]] = deque(maxlen=KEEP_RECENT)

    # ---- feed -------------------------------------------------------------------------------------------
    def on_delivered(self, batch: Delivered) -> None:
        """A batch the broker holds: enriched events count towards rate, latency and label mix; summaries,
        alerts and stats records are kept."""
        if batch.outcome == "enriched":
            self._observe_enriched_batch(batch.labels, batch.latencies_s, batch.now)
            n = min(len(batch.events), KEEP_RECENT)  # only the batch's last few: O(1) per batch
            for event, label in zip(batch.events[-n:] if n else (), batch.labels[-n:] if n else (), strict=True):
                self.recent.append({"id": event.id, "label": label, "text": event.text[:RECENT_TEXT_CHARS]})
        elif batch.outcome == "summary":
            for record in batch.records:
                self.add_summary(dict(record))
        elif batch.outcome == "alert":
            for record in batch.records:
                self.add_alert(dict(record))
        elif batch.outcome == "stats":
            for record in batch.records:
                self.add_stats(dict(record))

    def observe_enriched(self, label: str, total_ms: float, now: float | None = None) -> None:
        """One enriched event: its label and its end-to-end latency (event time → result acked), in ms."""
        now = self.clock() if now is None else now
        sec = self._bucket(now)
        sec.count += 1
        sec.labels[label] = sec.labels.get(label, 0) + 1
        b = _bin_of(total_ms)
        sec.latency_bins[b] = sec.latency_bins.get(b, 0) + 1
        self.events_total += 1
        if self._first_seen is None:
            self._first_seen = now

    def _observe_enriched_batch(self, labels: Sequence[str], latencies_s: Sequence[float], now: float) -> None:
        """`observe_enriched(label, seconds * 1000, now)` for each pair; the second's bucket looked up once."""
        if not labels and not latencies_s:
            return
        sec = self._bucket(now)
        counts, bins = sec.labels, sec.latency_bins
        for label, seconds in zip(labels, latencies_s, strict=True):
            counts[label] = counts.get(label, 0) + 1
            b = _bin_of(seconds * 1000.0)
            bins[b] = bins.get(b, 0) + 1
        sec.count += len(labels)
        self.events_total += len(labels)
        if self._first_seen is None:
            self._first_seen = now

    def add_summary(self, record: dict[str, Any]) -> None:
        _keep_highest(self.summaries, record)

    def add_alert(self, record: dict[str, Any]) -> None:
        self.alerts.append(record)

    def add_stats(self, record: dict[str, Any]) -> None:
        _keep_highest(self.stats, record)

    def _bucket(self, now: float) -> _Second:
        second = math.floor(now)
        if self._seconds and self._seconds[-1].second == second:
            return self._seconds[-1]
        if self._seconds and second < self._seconds[-1].second:
            # The wall clock stepped back: count it in the newest bucket rather than reorder history.
            return self._seconds[-1]
        sec = _Second(second)
        self._seconds.append(sec)
        self._expire(second)
        return sec

    def _expire(self, second: int) -> None:
        while self._seconds and self._seconds[0].second <= second - self.window_s:
            self._seconds.popleft()

    # ---- read -------------------------------------------------------------------------------------------
    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """A JSON-ready view of the last `window_s` seconds as of `now` (seconds; default: the clock's now)."""
        now = self.clock() if now is None else now
        current = math.floor(now)
        self._expire(current)
        seconds = [s for s in self._seconds if s.second <= current]

        # events/s over the last RATE_WINDOW_S complete seconds (the current one is still filling); a worker
        # younger than that is divided by its own age, not by 10.
        span = RATE_WINDOW_S
        if self._first_seen is not None:
            span = min(span, current - math.floor(self._first_seen))
        if span >= 1:
            events_per_s = sum(s.count for s in seconds if current - span <= s.second < current) / span
        else:  # the first second of activity
            events_per_s = float(sum(s.count for s in seconds if s.second == current))

        by_second = {s.second: s.count for s in seconds}
        rate_series = [{"t": t, "n": by_second.get(t, 0)} for t in range(current - RATE_SERIES_S + 1, current + 1)]

        bins: dict[int, int] = {}
        for s in seconds:
            if s.second > current - LATENCY_WINDOW_S:
                for b, n in s.latency_bins.items():
                    bins[b] = bins.get(b, 0) + n
        p50, p95, p99 = _percentiles(bins, (0.50, 0.95, 0.99))

        # Label mix: fixed 5 s buckets aligned to multiples of 5 s, so a bucket keeps its start as time moves.
        first_mix = (current - self.window_s + 1) // MIX_BUCKET_S * MIX_BUCKET_S
        mix: dict[int, dict[str, int]] = {t: {} for t in range(first_mix, current + 1, MIX_BUCKET_S)}
        labels: dict[str, int] = {}
        for s in seconds:
            t = s.second // MIX_BUCKET_S * MIX_BUCKET_S
            bucket = mix.setdefault(t, {})
            for label, n in s.labels.items():
                bucket[label] = bucket.get(label, 0) + n
                labels[label] = labels.get(label, 0) + n

        return {
            "now": now,
            "window_s": self.window_s,
            "events_total": self.events_total,
            "events_per_s": round(events_per_s, 2),
            "rate_series": rate_series,
            "latency_ms": {"p50": p50, "p95": p95, "p99": p99, "count": sum(bins.values())},
            "labels": sorted(labels, key=lambda k: (-labels[k], k)),
            "label_mix": [{"t": t, "counts": mix[t]} for t in sorted(mix)],
            "mix_bucket_s": MIX_BUCKET_S,
            # newest first, as the page lists them
            "summaries": list(reversed(self.summaries)),
            "alerts": list(reversed(self.alerts)),
            "stats": list(reversed(self.stats)),
            "recent": list(reversed(self.recent)),
        }


def _keep_highest(records: deque[dict[str, Any]], record: dict[str, Any]) -> None:
    """The readers' rule (schemas): a record of the same key and window as one kept replaces it only when it
    ranks higher (final, revision); a duplicate or an older revision is not shown."""
    ident = record_identity(record)
    if ident is not None:
        for i, old in enumerate(records):
            if record_identity(old) == ident:
                if record_rank(record) <= record_rank(old):
                    return
                del records[i]
                break
    records.append(record)
