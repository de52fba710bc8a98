"""How long the model takes for a batch of n, learnt from the batches it has run.

A decayed least-squares fit of `seconds = fixed + per_item * n`: recent batches count most, so the estimate
follows the machine (a noisy neighbour, a GPU warming up) without jumping on one outlier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol


class ServiceEstimate(Protocol):
    def estimate(self, n: int) -> float:
        """Seconds the model takes for a batch of n."""
        ...


class ServiceTime:
    def __init__(self, fixed_s: float = 0.005, per_item_s: float = 0.004, decay: float = 0.9) -> None:
        # Start from a prior worth ~2 batches (sizes 1 and 8) so the first estimates are sane.
        self._decay = decay
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        for n in (1, 8):
            self._add(n, fixed_s + per_item_s * n)
        self.observed = 0

    def _add(self, n: float, seconds: float) -> None:
        d = self._decay
        self._w = self._w * d + 1.0
        self._x = self._x * d + n
        self._y = self._y * d + seconds
        self._xx = self._xx * d + n * n
        self._xy = self._xy * d + n * seconds

    def observe(self, n: int, seconds: float) -> None:
        if n > 0 and seconds >= 0:
            self._add(n, seconds)
            self.observed += 1

    def coefficients(self) -> tuple[float, float]:
        """(fixed seconds, seconds per item)."""
        mean_x, mean_y = self._x / self._w, self._y / self._w
        var_x = self._xx / self._w - mean_x * mean_x
        if var_x < 1e-9:  # all batches the same size: attribute time pro rata
            return 0.0, mean_y / max(mean_x, 1.0)
        slope = max((self._xy / self._w - mean_x * mean_y) / var_x, 0.0)
        return max(mean_y - slope * mean_x, 0.0), slope

    def estimate(self, n: int) -> float:
        fixed, per_item = self.coefficients()
        return fixed + per_item * n


MIN_SHARE = 0.02  # an encoder with less of the recent events is left out of the estimate
WHOLE = ""  # RoutedServiceTime's key for batches observed whole (one encoder, or its parts unknown)


class RoutedServiceTime:
    """The service time of batches that the router (pipeline/model/router.py) splits among encoders by
    language: one `ServiceTime` fit per encoder, and each encoder's recent share of the events (decayed like the
    fits). A batch of n is estimated as the sum, over the encoders with at least `MIN_SHARE` of the recent
    events, of that encoder's estimate for its share of n (rounded up, at least one: each sub-batch pays its
    own fixed cost). On the safe side for deadlines: a small batch is charged every encoder's fixed cost,
    though its events may all go to one. Without parts observed it is one `ServiceTime` over whole batches."""

    def __init__(self, decay: float = 0.9) -> None:
        self._decay = decay
        self.encoders: dict[str, ServiceTime] = {WHOLE: ServiceTime(decay=decay)}
        self.shares: dict[str, float] = {}  # decayed fraction of events per encoder (parts observed only)
        self.observed = 0

    def observe(self, n: int, seconds: float) -> None:
        """A batch of n run whole by one encoder, or whose split is unknown."""
        self.encoders[WHOLE].observe(n, seconds)
        self.observed += 1

    def observe_parts(self, parts: Mapping[str, tuple[int, float]]) -> None:
        """One batch's sub-batches: encoder name → (events, seconds)."""
        total = sum(n for n, _ in parts.values())
        if total <= 0:
            return
        d = self._decay
        for name in self.shares:
            self.shares[name] *= d
        for name, (n, seconds) in parts.items():
            self.encoders.setdefault(name, ServiceTime(decay=d)).observe(n, seconds)
            self.shares[name] = self.shares.get(name, 0.0) + (1 - d) * n / total
        self.observed += 1

    def estimate(self, n: int) -> float:
        weight = sum(self.shares.values())
        if weight <= 0:
            return self.encoders[WHOLE].estimate(n)
        return sum(
            self.encoders[name].estimate(max(1, math.ceil(n * share / weight - 1e-6)))
            for name, share in self.shares.items()
            if share >= MIN_SHARE * weight
        )
