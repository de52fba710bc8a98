"""The comparison plot: a PNG, also with steps whose p99 is infinite (unanswered events)."""

from __future__ import annotations

import math

from bench.plot import plot_compare
from bench.steps import StepResult


def _step(offered: float, achieved: float, p99: float) -> StepResult:
    return StepResult(offered, 100, 100, achieved, p99 / 3, p99, p99, p99, 0, 0, 0.0)


def test_plot_writes_a_png(tmp_path) -> None:
    steps = {
        "ours": [_step(100, 100, 60), _step(200, 198, 90), _step(300, 240, math.inf)],
        "naive": [_step(100, 100, 80), _step(200, 150, 3000)],
    }
    out = plot_compare(tmp_path / "p" / "compare.png", steps, 250.0, {"bare model, batch 32": 320.0}, "test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
