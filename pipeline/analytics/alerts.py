"""Spike detection per label against a rolling baseline of the last K closed global windows.

A label alerts in a window when its count is at least `min_count` and either
`count >= ratio * max(mean, 1)` or `(count - mean) / max(std, sqrt(mean)) >= z` (z only when the baseline mean
is > 0), where mean and std are over the last `baseline_windows` windows (a label absent from a window counts 0
there). The sqrt(mean) floor is the spread of a count that follows a Poisson law: the std of a few windows can
come out far smaller than a count's natural noise and would turn every wobble into a z-alert. No alert until
`min_baseline_windows` windows have closed: there is nothing to compare with yet.

Windows are named by their start (`window=`): the baseline of a window is the K windows before it, whatever the
order they were checked in, and a window checked again (a later revision of its stats) replaces its counts.
So the baseline rebuilt from the stats topic after a restart (`remember`) is the one the worker had.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Spike:
    label: str
    count: int
    mean: float
    std: float
    windows: int  # how many windows the baseline covers
    ratio: float  # count / max(mean, 1)
    z: float | None  # None when the baseline is all zeros
    rule: str  # which rule fired: ratio, z, or ratio+z
    sample_ids: list[str] = field(default_factory=list)


class SpikeDetector:
    def __init__(
        self,
        *,
        baseline_windows: int = 10,
        min_baseline_windows: int = 3,
        min_count: int = 5,
        ratio: float | None = 3.0,
        z: float | None = 3.0,
    ) -> None:
        if ratio is None and z is None:
            raise ValueError("set ratio, z or both")
        self.min_baseline_windows = max(1, min_baseline_windows)
        self.min_count = min_count
        self.ratio = ratio
        self.z = z
        self.baseline_windows = max(baseline_windows, self.min_baseline_windows)
        self._history: dict[int, dict[str, int]] = {}  # window start → label counts

    def _before(self, window: int | None) -> list[dict[str, int]]:
        starts = sorted(s for s in self._history if window is None or s < window)
        return [self._history[s] for s in starts[-self.baseline_windows :]]

    def windows_before(self, window: int) -> int:
        """How many windows before `window` the baseline holds."""
        return sum(1 for s in self._history if s < window)

    def remember(self, window: int, counts: dict[str, int]) -> None:
        """Put a window's counts in the baseline (restored from the stats topic, or checked)."""
        self._history[window] = dict(counts)
        if len(self._history) > 4 * self.baseline_windows:  # keep room for windows checked out of order
            for s in sorted(self._history)[: len(self._history) - 4 * self.baseline_windows]:
                del self._history[s]

    def baseline(self, label: str, window: int | None = None) -> tuple[float, float, int]:
        """(mean, population std, windows) of `label`'s count over the last K windows before `window`."""
        counts = [h.get(label, 0) for h in self._before(window)]
        if not counts:
            return 0.0, 0.0, 0
        mean = sum(counts) / len(counts)
        return mean, math.sqrt(sum((c - mean) ** 2 for c in counts) / len(counts)), len(counts)

    def check(
        self,
        counts: dict[str, int],
        samples: dict[str, list[str]] | None = None,
        *,
        join_baseline: bool = True,
        window: int | None = None,
    ) -> list[Spike]:
        """The spikes of a closed window's label counts; then the window joins the baseline (unless told not to:
        a window seen only in part, e.g. the first of a stream, would drag the baseline down). `window`: its
        start (None: after every window checked so far)."""
        if window is None:
            window = max(self._history, default=-1) + 1
        spikes = []
        if len(self._before(window)) >= self.min_baseline_windows:
            for label, count in sorted(counts.items()):
                spike = self._judge(label, count, (samples or {}).get(label, []), window)
                if spike is not None:
                    spikes.append(spike)
        if join_baseline:
            self.remember(window, counts)
        return spikes

    def _judge(self, label: str, count: int, sample_ids: list[str], window: int) -> Spike | None:
        if count < self.min_count:
            return None
        mean, std, n = self.baseline(label, window)
        ratio = count / max(mean, 1.0)
        spread = max(std, math.sqrt(mean))
        z = (count - mean) / spread if spread > 0 else None
        by_ratio = self.ratio is not None and ratio >= self.ratio
        by_z = self.z is not None and z is not None and z >= self.z
        if not (by_ratio or by_z):
            return None
        rule = "ratio+z" if by_ratio and by_z else ("ratio" if by_ratio else "z")
        return Spike(label, count, mean, std, n, ratio, z, rule, sample_ids[:5])
