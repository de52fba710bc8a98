"""One stats record per window across all workers: per-partition partial counts in, merged windows out (pure,
the clock is passed in).

Each worker counts the records of every `events.enriched.by-key` partition it owns per window and, when the
window closes, writes one partial for each such partition to `events.stats.partials`, all under one key
(`PARTIALS_KEY`; a partition with no record in the window gives an empty partial). Every partial of every
window therefore lands in one partition of that topic, and its owner merges them here: one merger for all
windows, so spike detection sees every window and its baseline is the windows before it (a few small records
per window: one process keeps up with any number of workers):

- A window is complete when it holds a partial from each of the `partitions` partitions of the by-key topic; it
  is merged then into a `final` stats record. A window still incomplete `wait_s` after its first partial (a
  worker died and its partitions have not been taken over yet) is merged from what is there, `final: false`;
  the missing partials, when they come, make a final record.
- Several partials for one partition and window (a record read again after a crash or a rebalance) are not
  added up: the one over the most records is kept (each covers a subset of the partition's records of that
  window).
- `revision` counts the records this window got: a window merged again (a partial with more records, or
  the missing ones) gets the next revision. Readers keep, per window, the record with the highest
  (`final`, `revision`). A partial that adds nothing to what was already emitted emits nothing.
- A window with no events at all emits no record (as before: an idle window has no stats).
- The windows already merged are rebuilt from the stats topic at start (`restore`), so a partial read again
  after a restart does not re-emit a window, and the spike baselines (alerts.py) survive restarts.

The acks of a window's partials run only after its stats record (and its alerts) are stored; a window whose
partials add nothing is acked at once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.analytics.records import rfc3339
from pipeline.analytics.windows import Window

AckFn = Callable[[], Any]
PARTIALS_KEY = b"windows"  # every partial under one key: one partition, one merger
MAX_SAMPLES_PER_LABEL = 10  # texts per label a partial carries: enough for an alert's prompt
# Facts (pipeline/facts) of the sampled events' entities a partial carries, for the alert's prompt: bounded in
# bytes, so a partial stays far below a broker's record limit whatever the facts hold.
MAX_FACTS_BYTES_PER_PARTIAL = 64 * 1024
KEEP_WINDOWS = 200  # merged windows remembered (for revisions and to drop re-read partials); older: the stats topic


def latency_bucket(ms: float) -> int:
    """A latency rounded to 1 ms below 1 s, to 10 ms below 10 s, to 100 ms beyond: a mergeable histogram."""
    if ms < 1000:
        return round(ms)
    if ms < 10_000:
        return round(ms / 10) * 10
    return round(ms / 100) * 100


def partial_record(window: Window, partition: int, start_ms: int, end_ms: int) -> dict[str, Any]:
    """The partial of one by-key partition for one window (`window` holds that partition's records of it)."""
    events = window.events
    hist = Counter(latency_bucket(e.latency_ms) for e in events if e.latency_ms is not None)
    samples: dict[str, dict[str, list[Any]]] = {}
    facts_budget = MAX_FACTS_BYTES_PER_PARTIAL
    for e in events:
        s = samples.setdefault(e.label, {"ids": [], "texts": []})
        if len(s["ids"]) < MAX_SAMPLES_PER_LABEL:
            s["ids"].append(e.id)
            s["texts"].append(e.text)
            if e.facts is not None and facts_budget > 0:  # each entity once per label
                known = s.setdefault("facts", [])
                if all(f[0] != e.facts[0] for f in known):
                    facts_budget -= len(orjson.dumps(e.facts))
                    if facts_budget >= 0:
                        known.append(list(e.facts))
    return {
        "window": {"start_ms": start_ms, "end_ms": end_ms},
        "partition": partition,
        "events": len(events),
        "late": window.late,
        "labels": dict(Counter(e.label for e in events)),
        "sources": dict(Counter(e.source for e in events)),
        "latency_hist": {str(k): v for k, v in sorted(hist.items())},
        "first_ts_ms": min((e.ts_ms for e in events), default=None),
        "samples": samples,
    }


def empty_partial(partition: int, start_ms: int, end_ms: int) -> dict[str, Any]:
    return {
        "window": {"start_ms": start_ms, "end_ms": end_ms},
        "partition": partition,
        "events": 0,
        "late": 0,
        "labels": {},
        "sources": {},
        "latency_hist": {},
        "first_ts_ms": None,
        "samples": {},
    }


def _percentile(hist: Mapping[float, int], q: float) -> float | None:
    n = sum(hist.values())
    if n == 0:
        return None
    rank, seen = math.ceil(q * (n - 1)), 0  # the nearest value at or above the interpolated percentile
    for value in sorted(hist):
        seen += hist[value]
        if seen > rank:
            return float(value)
    return float(max(hist))


@dataclass(slots=True)
class MergedWindow:
    """A window to emit: its stats record, the texts of each label (for alert explanations), the acks to run
    once it is stored."""

    start_ms: int
    end_ms: int
    record: dict[str, Any]
    texts: dict[str, list[str]]
    sample_ids: dict[str, list[str]]
    first_ts_ms: int | None
    acks: list[AckFn]
    facts: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)  # per label: (entity, facts)


@dataclass(slots=True)
class _State:
    start_ms: int
    end_ms: int
    source: int  # the stats-partials partition its partials come from
    parts: dict[int, dict[str, Any]] = field(default_factory=dict)
    acks: list[AckFn] = field(default_factory=list)
    due_at: float | None = None  # when it is merged incomplete
    revision: int = 0  # of the last record emitted
    final: bool = False  # the last record emitted was final
    emitted: dict[int, int] = field(default_factory=dict)  # events per partition in the last record emitted
    alerted: set[str] = field(default_factory=set)  # labels already alerted in this window


class StatsMerger:
    def __init__(self, partitions: int, wait_s: float) -> None:
        self.partitions = partitions
        self.wait_s = wait_s
        self._windows: dict[int, _State] = {}

    @property
    def waiting(self) -> int:
        """Windows holding partials not yet acked."""
        return sum(1 for s in self._windows.values() if s.acks)

    def add(self, partial: dict[str, Any], ack: AckFn, source: int, now: float) -> list[MergedWindow | list[AckFn]]:
        """Take one partial (read from stats-partials partition `source`). Returns what is ready now: a window
        to emit, or acks to run at once (a partial that adds nothing)."""
        w = partial["window"]
        start, end = int(w["start_ms"]), int(w["end_ms"])
        st = self._windows.get(start)
        if st is None:
            st = self._windows[start] = _State(start, end, source)
            self._prune()
        st.source = source
        p = int(partial["partition"])
        if p not in st.parts or partial["events"] > st.parts[p]["events"]:
            st.parts[p] = partial
        st.acks.append(ack)
        if st.due_at is None:
            st.due_at = now + self.wait_s
        if len(st.parts) >= self.partitions:
            return [self._merge(st, final=True)]
        if self._adds_nothing(st):
            return [self._take_acks(st)]
        return []

    def due(self, now: float) -> list[MergedWindow | list[AckFn]]:
        """Windows still incomplete `wait_s` after their first partial: merged from what they have."""
        out: list[MergedWindow | list[AckFn]] = []
        for st in list(self._windows.values()):
            if st.acks and st.due_at is not None and st.due_at <= now:
                out.append(self._merge(st, final=False))
        return out

    def pending_before(self, start_ms: int) -> bool:
        """An older window with events still waits for partials (spike checks go in window order)."""
        return any(
            s.start_ms < start_ms and s.acks and any(d["events"] for d in s.parts.values())
            for s in self._windows.values()
        )

    def next_due_at(self) -> float | None:
        times = [s.due_at for s in self._windows.values() if s.acks and s.due_at is not None]
        return min(times) if times else None

    def revoke(self, sources: Iterable[int]) -> int:
        """Forget the unacked partials of stats-partials partitions no longer ours (the next owner reads them
        again); returns how many were dropped."""
        gone = set(sources)
        dropped = 0
        for st in self._windows.values():
            if st.source in gone and st.acks:
                dropped += len(st.acks)
                st.acks.clear()
                st.parts = {}
                st.due_at = None
        return dropped

    def restore(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Remember the stats records already stored (read back from the stats topic); returns the one kept per
        window (highest final, revision), oldest first, for the spike baseline."""
        best: dict[int, dict[str, Any]] = {}
        for r in records:
            try:
                start = int(r["window"]["start_ms"])
                rank = (bool(r.get("final", True)), int(r.get("revision", 1)))
            except (KeyError, TypeError, ValueError):
                continue
            old = best.get(start)
            if old is None or rank > (bool(old.get("final", True)), int(old.get("revision", 1))):
                best[start] = r
        for start, r in best.items():
            st = self._windows.get(start) or _State(start, int(r["window"]["end_ms"]), -1)
            st.revision = max(st.revision, int(r.get("revision", 1)))
            st.final = st.final or bool(r.get("final", True))
            st.emitted = {int(p): n for p, n in (r.get("by_partition") or {}).items()}
            st.alerted |= set(r.get("spikes") or [])
            self._windows[start] = st
        self._prune()
        return [best[s] for s in sorted(best)]

    def mark_alerted(self, start_ms: int, labels: Iterable[str]) -> None:
        st = self._windows.get(start_ms)
        if st is not None:
            st.alerted |= set(labels)

    def alerted(self, start_ms: int) -> set[str]:
        st = self._windows.get(start_ms)
        return set(st.alerted) if st is not None else set()

    # ---- internals ----------------------------------------------------------------------------------------
    def _adds_nothing(self, st: _State) -> bool:
        """Every partial held is covered by the last record emitted (a re-read after it was stored)."""
        return st.revision > 0 and all(d["events"] <= st.emitted.get(p, -1) for p, d in st.parts.items())

    def _take_acks(self, st: _State) -> list[AckFn]:
        acks, st.acks, st.due_at = st.acks, [], None
        return acks

    def _merge(self, st: _State, *, final: bool) -> MergedWindow | list[AckFn]:
        if self._adds_nothing(st) and (st.final or not final):
            return self._take_acks(st)
        parts = list(st.parts.values())
        events = sum(d["events"] for d in parts)
        if events == 0:  # an idle window: no record
            st.emitted = {p: d["events"] for p, d in st.parts.items()}
            st.final = st.final or final
            return self._take_acks(st)
        labels: Counter[str] = Counter()
        sources: Counter[str] = Counter()
        hist: Counter[float] = Counter()
        texts: dict[str, list[str]] = {}
        ids: dict[str, list[str]] = {}
        facts: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for d in sorted(parts, key=lambda d: d["partition"]):
            labels.update(d["labels"])
            sources.update(d["sources"])
            hist.update({float(k): v for k, v in d["latency_hist"].items()})
            for label, s in d["samples"].items():
                texts.setdefault(label, []).extend(s["texts"])
                facts.setdefault(label, []).extend((f[0], f[1]) for f in s.get("facts", ()))
                ids.setdefault(label, []).extend(s["ids"])
        n_lat = sum(hist.values())
        mean = sum(k * v for k, v in hist.items()) / n_lat if n_lat else None
        p95 = _percentile(hist, 0.95)
        st.revision += 1
        st.final = final
        st.emitted = {p: d["events"] for p, d in st.parts.items()}
        record = {
            "window": {
                "start": rfc3339(st.start_ms),
                "end": rfc3339(st.end_ms),
                "start_ms": st.start_ms,
                "end_ms": st.end_ms,
                "part": 0,
                "closed_by": "time",
            },
            "events": events,
            "late": sum(d["late"] for d in parts),
            "labels": dict(labels.most_common()),
            "sources": dict(sources.most_common()),
            "latency_ms": {
                "mean": round(mean, 2) if mean is not None else None,
                "p95": round(p95, 2) if p95 is not None else None,
            },
            "partitions": len(st.parts),
            "by_partition": {str(p): st.parts[p]["events"] for p in sorted(st.parts)},
            "final": final,
            "revision": st.revision,
            "spikes": sorted(st.alerted),
        }
        first = [d["first_ts_ms"] for d in parts if d.get("first_ts_ms") is not None]
        if final:  # the texts were for this window's alerts: a revision keeps the counts (memory stays small)
            for p in st.parts:
                st.parts[p] = dict(st.parts[p], samples={})
        return MergedWindow(
            st.start_ms, st.end_ms, record, texts, ids, min(first) if first else None, self._take_acks(st), facts
        )

    def _prune(self) -> None:
        if len(self._windows) <= KEEP_WINDOWS:
            return
        for start in sorted(self._windows):
            if len(self._windows) <= KEEP_WINDOWS:
                return
            if not self._windows[start].acks:
                del self._windows[start]
