"""Spike detection per label against a rolling baseline of the last K closed global windows.

A label alerts in a window when its count is at least `min_count` and either
`count >= ratio * max(mean, 1)` or `(count - mean) / max(std, sqrt(mean)) >= z` (z only when the baseline mean
is > 0), where mean and std are over the last `baseline_windows` windows (a label absent from a window counts 0
there). The sqrt(mean) floor is the spread of a count that follows a Poisson law: the std of a few windows can
come out far smaller than a count's natural noise and would turn every wobble into a z-alert. No alert until
`min_baseline_windows` windows have closed: there is nothing to compare with yet.
"""

from __future__ import annotations

import math
from collections import deque
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
        self._history: deque[dict[str, int]] = deque(maxlen=max(baseline_windows, self.min_baseline_windows))

    def baseline(self, label: str) -> tuple[float, float, int]:
        """(mean, population std, windows) of `label`'s count over the remembered windows."""
        counts = [h.get(label, 0) for h in self._history]
        if not counts:
            return 0.0, 0.0, 0
        mean = sum(counts) / len(counts)
        return mean, math.sqrt(sum((c - mean) ** 2 for c in counts) / len(counts)), len(counts)

    def check(
        self, counts: dict[str, int], samples: dict[str, list[str]] | None = None, *, join_baseline: bool = True
    ) -> list[Spike]:
        """The spikes of a closed window's label counts; then the window joins the baseline (unless told not to:
        a window seen only in part, e.g. the first after a start, would drag the baseline down)."""
        spikes = []
        if len(self._history) >= self.min_baseline_windows:
            for label, count in sorted(counts.items()):
                spike = self._judge(label, count, (samples or {}).get(label, []))
                if spike is not None:
                    spikes.append(spike)
        if join_baseline:
            self._history.append(dict(counts))
        return spikes

    def _judge(self, label: str, count: int, sample_ids: list[str]) -> Spike | None:
        if count < self.min_count:
            return None
        mean, std, n = self.baseline(label)
        ratio = count / max(mean, 1.0)
        spread = max(std, math.sqrt(mean))
        z = (count - mean) / spread if spread > 0 else None
        by_ratio = self.ratio is not None and ratio >= self.ratio
        by_z = self.z is not None and z is not None and z >= self.z
        if not (by_ratio or by_z):
            return None
        rule = "ratio+z" if by_ratio and by_z else ("ratio" if by_ratio else "z")
        return Spike(label, count, mean, std, n, ratio, z, rule, sample_ids[:5])
