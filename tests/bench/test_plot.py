"""The comparison plot: a PNG, also with steps whose p99 is infinite (unanswered events)."""

from __future__ import annotations

import math

from bench.plot import plot_compare, plot_identity
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


def test_identity_plot_writes_a_png_also_with_a_missing_figure(tmp_path) -> None:
    def drained(eps: float, cpu_us: float) -> dict[str, float]:
        return {"events_per_s": eps, "steady_events_per_s": eps * 1.1, "system_cpu_us_per_event": cpu_us}

    systems = {"aiokafka alone": drained(40_000, 20.0), "ours": drained(math.nan, math.nan)}
    out = plot_identity(tmp_path / "p" / "identity.png", systems, "test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
