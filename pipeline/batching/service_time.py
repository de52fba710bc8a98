"""How long the model takes for a batch of n, learnt from the batches it has run.

A decayed least-squares fit of `seconds = fixed + per_item * n`: recent batches count most, so the estimate
follows the machine (a noisy neighbour, a GPU warming up) without jumping on one outlier.
"""

from __future__ import annotations


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
