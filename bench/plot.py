"""The comparison's plot: p99 (solid) and p50 (dashed) end-to-end latency against achieved throughput,
one colour per system, the budget as a horizontal line and the bare model's ceilings as vertical ones."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.steps import StepResult


def plot_compare(
    path: Path,
    steps: Mapping[str, Sequence[StepResult]],
    budget_ms: float,
    ceilings: Mapping[str, float],  # label → texts/s
    title: str,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    finite_max = budget_ms
    for i, (name, rows) in enumerate(steps.items()):
        colour = f"C{i}"
        # Unanswered events make p99 infinite: draw those steps at the top of the plot, marked x.
        xs = [s.achieved_rate for s in rows]
        p99 = [s.p99_ms for s in rows]
        p50 = [s.p50_ms for s in rows]
        finite_max = max([finite_max, *[v for v in p99 + p50 if math.isfinite(v)]])
        ax.plot(xs, [v if math.isfinite(v) else math.nan for v in p99], "o-", color=colour, label=f"{name} p99")
        ax.plot(xs, [v if math.isfinite(v) else math.nan for v in p50], "s--", color=colour, label=f"{name} p50")
        lost = [x for x, v in zip(xs, p99, strict=True) if not math.isfinite(v)]
        if lost:
            ax.plot(lost, [finite_max * 1.5] * len(lost), "x", color=colour, markersize=10)
    ax.axhline(budget_ms, color="grey", linestyle=":", label=f"budget {budget_ms:.0f} ms")
    styles = [("black", "--"), ("dimgrey", "-."), ("grey", ":")]
    for j, (label, value) in enumerate(ceilings.items()):
        if value > 0:
            colour, style = styles[j % len(styles)]
            ax.axvline(value, color=colour, linestyle=style, alpha=0.7, label=f"{label}: {value:.0f}/s")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 100, 200 rather than 10^2
    ax.set_xlabel("achieved throughput (events/s)")
    ax.set_ylabel("end-to-end latency (ms, log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
