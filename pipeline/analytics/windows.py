"""Per-key tumbling windows by event time: pure, the clock is passed in (`now`, wall-clock seconds).

A window covers [start, start + window_s) of event time (`ts`, epoch ms), aligned to epoch multiples of
`window_s`. It closes when the clock passes `max(end, opened_at) + grace_s`: `grace_s` after its end for a
live stream, and `grace_s` after it was opened for a window rebuilt from re-read records after a restart
(their end is long past; the grace lets the rest of the re-read records join it instead of being split off).

A window also closes early when it reaches `max_events` (every-N; the next events of the same time range open
part 1, 2, ...), when it holds `max_events_per_window`, or, to bound memory, when opening another window would
exceed `max_open_windows` / `max_open_events` (the window due first closes).

An event whose id the window already holds (a duplicate enriched record) is counted once; its ack is kept
with the first copy's.

An event whose window has already closed (by time) in this process is late: it joins the key's window that
contains `now`, and the window counts it in `late`. Closed windows are remembered for `retention_s`; an event
older than that opens a fresh window for its time range (as after a restart).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

CloseReason = Literal["time", "max_events", "size", "capacity", "shutdown"]


@dataclass(slots=True)
class WindowEvent:
    """What a window keeps of one enriched record."""

    id: str
    text: str
    label: str
    source: str
    ts_ms: int
    latency_ms: float | None = None
    partition: int = 0  # of the topic it was read from (events.enriched.by-key): whose windows it is in
    ack: Callable[[], Any] | None = None  # acks the enriched record once the window's output is acked
    # Acks of re-deliveries of the same record (same id) into the same window: acked with it, counted once.
    extra_acks: list[Callable[[], Any]] = field(default_factory=list)
    # (entity, facts) the classify path joined to the event (its enriched record's `facts`), for the prompt.
    facts: tuple[str, dict[str, Any]] | None = None

    def acks(self) -> list[Callable[[], Any]]:
        return ([self.ack] if self.ack is not None else []) + self.extra_acks


@dataclass(slots=True)
class Window:
    key: str
    start_ms: int
    end_ms: int
    part: int  # 0, then 1, 2, ... for the windows of the same time range after an every-N close
    opened_at: float
    close_at: float
    events: list[WindowEvent] = field(default_factory=list)
    by_id: dict[str, WindowEvent] = field(default_factory=dict)
    late: int = 0  # events whose own window had already closed
    reason: CloseReason | None = None  # why it closed; None while open
    closed_at: float | None = None


def key_of(record: dict[str, Any], spec: str) -> str:
    """The window key of an enriched record: `key`, `source` or `attrs.<dotted.path>`; "" when absent.

    Strings are used as they are; numbers and booleans as their text; anything else (null, an object, a list)
    counts as absent.
    """
    value: Any = record
    for part in spec.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return ""


class TumblingWindows:
    def __init__(
        self,
        window_s: float,
        grace_s: float,
        *,
        max_events: int = 0,
        max_events_per_window: int = 10_000,
        max_open_windows: int = 10_000,
        max_open_events: int = 100_000,
        retention_s: float | None = None,
    ) -> None:
        if window_s <= 0 or grace_s < 0:
            raise ValueError("window_s must be > 0 and grace_s >= 0")
        self.window_ms = round(window_s * 1000)
        self.grace_s = grace_s
        self.max_events = max_events
        self.max_events_per_window = max(1, max_events_per_window)
        self.max_open_windows = max(1, max_open_windows)
        self.max_open_events = max(1, max_open_events)
        self.retention_s = retention_s if retention_s is not None else max(10 * window_s, 600.0)
        self._open: dict[tuple[str, int], Window] = {}
        self._due: list[tuple[float, int, tuple[str, int], int]] = []  # (close_at, seq, id, part): lazy heap
        self._seq = 0
        self._closed: dict[tuple[str, int], float] = {}  # time-closed windows → when they closed
        self._closed_order: deque[tuple[float, tuple[str, int]]] = deque()
        self._next_part: dict[tuple[str, int], int] = {}  # after an early close
        self.open_events = 0

    def start_of(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.window_ms

    @property
    def open_windows(self) -> int:
        return len(self._open)

    def add(self, key: str, event: WindowEvent, now: float) -> list[Window]:
        """Put `event` in its window; return the windows this closed early (full, or to make room)."""
        closed: list[Window] = []
        wid = (key, self.start_of(event.ts_ms))
        late = False
        if wid not in self._open and wid in self._closed:
            late = True
            wid = (key, self.start_of(int(now * 1000)))
        window = self._open.get(wid)
        if window is None:
            closed += self._make_room(now)
            window = self._open_window(wid, now)
        same = window.by_id.get(event.id)
        if same is not None:  # a re-delivery (at-least-once upstream, or a re-read): count it once
            if event.ack is not None:
                same.extra_acks.append(event.ack)
            return closed
        window.by_id[event.id] = event
        window.events.append(event)
        window.late += late
        self.open_events += 1
        n = len(window.events)
        if self.max_events and n >= self.max_events:
            closed.append(self._close(window, "max_events", now))
        elif n >= self.max_events_per_window:
            closed.append(self._close(window, "size", now))
        elif self.open_events > self.max_open_events:
            closed += self._make_room(now, events=True)
        return closed

    def due(self, now: float) -> list[Window]:
        """Close and return every window whose close time has passed, oldest first."""
        out = []
        while self._due and self._due[0][0] <= now:
            _, _, wid, part = heapq.heappop(self._due)
            window = self._open.get(wid)
            if window is not None and window.part == part and window.close_at <= now:
                out.append(self._close(window, "time", now))
        self._forget(now)
        return out

    def has(self, key: str, start_ms: int) -> bool:
        """A window of `key` at `start_ms` is open, or was closed by time and is still remembered."""
        return (key, start_ms) in self._open or (key, start_ms) in self._closed

    def drop(self, keep: Callable[[Window], bool]) -> list[Window]:
        """Remove the open windows `keep` says no to, without closing them (their partition went to another
        worker, which reads their records again), and forget every closed window: records read again after
        a rebalance rebuild their own windows instead of counting as late."""
        gone = [w for w in self._open.values() if not keep(w)]
        for w in gone:
            del self._open[(w.key, w.start_ms)]
            self.open_events -= len(w.events)
        self._closed.clear()
        self._closed_order.clear()
        self._next_part.clear()
        return gone

    def next_close_at(self) -> float | None:
        self._drop_stale_heads()
        return self._due[0][0] if self._due else None

    def close_all(self, now: float) -> list[Window]:
        """Close every open window (shutdown): their records are acked only if their output is."""
        return [self._close(w, "shutdown", now) for w in sorted(self._open.values(), key=lambda w: w.close_at)]

    # ---- internals --------------------------------------------------------------------------------------
    def _open_window(self, wid: tuple[str, int], now: float) -> Window:
        key, start = wid
        end = start + self.window_ms
        part = self._next_part.get(wid, 0)
        window = Window(key, start, end, part, now, max(end / 1000.0, now) + self.grace_s)
        self._open[wid] = window
        self._seq += 1
        heapq.heappush(self._due, (window.close_at, self._seq, wid, part))
        return window

    def _close(self, window: Window, reason: CloseReason, now: float) -> Window:
        wid = (window.key, window.start_ms)
        del self._open[wid]
        self.open_events -= len(window.events)
        window.reason, window.closed_at = reason, now
        if reason == "time":
            self._next_part.pop(wid, None)
            self._closed[wid] = now
            self._closed_order.append((now, wid))
        else:  # the time range stays open: its next events start the next part
            self._next_part[wid] = window.part + 1
        return window

    def _drop_stale_heads(self) -> None:
        while self._due:
            _, _, wid, part = self._due[0]
            window = self._open.get(wid)
            if window is not None and window.part == part:
                return
            heapq.heappop(self._due)

    def _make_room(self, now: float, *, events: bool = False) -> list[Window]:
        """Close the windows due first until a new window (or the event just added) fits the bounds."""
        out = []
        while self._open and (
            (events and self.open_events > self.max_open_events)
            or (not events and len(self._open) >= self.max_open_windows)
        ):
            self._drop_stale_heads()
            _, _, wid, _ = heapq.heappop(self._due)
            out.append(self._close(self._open[wid], "capacity", now))
        return out

    def _forget(self, now: float) -> None:
        horizon = now - self.retention_s
        while self._closed_order and self._closed_order[0][0] < horizon:
            _, wid = self._closed_order.popleft()
            if self._closed.get(wid, now) < horizon:
                del self._closed[wid]
        if self._next_part:  # parts of time ranges long over, with no open window left
            stale = [w for w in self._next_part if w not in self._open and (w[1] + self.window_ms) / 1000.0 < horizon]
            for w in stale:
                del self._next_part[w]
