"""The bench plots. `compare`: p99 (solid) and p50 (dashed) end-to-end latency against achieved throughput,
one colour per system, the budget as a horizontal line and the bare model's ceilings as vertical ones.
`identity`: bars of events/s and CPU per event, one group per system."""

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


def plot_identity(path: Path, systems: Mapping[str, Mapping[str, float]], title: str) -> Path:
    """`bench identity`'s plot: per system (label → run_drain's results), events/s (first → last and
    steady) and the system's CPU µs per event, as bars side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(systems)
    xs = range(len(names))
    fig, (rate_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 5), dpi=120)
    w = 0.4
    overall = [systems[n]["events_per_s"] for n in names]
    steady = [systems[n]["steady_events_per_s"] for n in names]
    rate_ax.bar([x - w / 2 for x in xs], overall, w, color="C0", label="first → last")
    rate_ax.bar([x + w / 2 for x in xs], steady, w, color="C1", label="steady (10–90 % of results)")
    for x, v in zip(xs, overall, strict=True):
        if math.isfinite(v):
            rate_ax.annotate(f"{v:,.0f}", (x - w / 2, v), ha="center", va="bottom", fontsize=7)
    rate_ax.set_ylabel("events/s (higher is better)")
    top = max([v for v in overall + steady if math.isfinite(v)], default=1.0)
    rate_ax.set_ylim(0, top * 1.25)  # room for the legend above the bars
    rate_ax.legend(fontsize=7, loc="upper center", ncol=2)
    cpu = [systems[n]["system_cpu_us_per_event"] for n in names]
    cpu_ax.bar(list(xs), cpu, 0.6, color=[f"C{i + 2}" for i in xs])
    for x, v in zip(xs, cpu, strict=True):
        if math.isfinite(v):
            cpu_ax.annotate(f"{v:,.1f}", (x, v), ha="center", va="bottom", fontsize=7)
    cpu_ax.set_ylabel("process CPU µs per event (lower is better)")
    for ax in (rate_ax, cpu_ax):
        ax.set_xticks(list(xs), names, fontsize=8, rotation=15)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
