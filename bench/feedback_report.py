"""What `bench feedback` prints and draws: the learning-curve table and plot (accuracy against feedback labels
per class: the classifier with the learned head, in-process and through the pipeline when measured, the offline
probe, the zero-shot start and the majority-class baseline).

Table columns: feedback labels per class, examples in all, accuracy in-process and through the worker, the
probe's, (head through the worker, else in-process) / probe, the share of test events the worker labelled as
the in-process run did, the head version the enriched records named."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.table import Table


def _acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def curve_table(r: Mapping[str, Any]) -> Table:
    t = Table(
        "per class",
        "examples",
        "in-process",
        "pipeline",
        "offline probe",
        "head / probe",
        "same labels",
        "head version (pipeline)",
        title=f"learning curve: {r['dataset']}, accuracy on {r['test_size']} held-out events (majority class "
        f"{r['majority_baseline']:.3f}), mode {r['mode']}",
    )
    for s in r["steps"]:
        best = s["pipeline_accuracy"] if s["pipeline_accuracy"] is not None else s["accuracy"]
        ratio = best / s["probe_accuracy"] if s["probe_accuracy"] else None
        t.add_row(
            str(s["per_label"]),
            str(s["examples"]),
            _acc(s["accuracy"]),
            _acc(s["pipeline_accuracy"]),
            _acc(s["probe_accuracy"]),
            "-" if ratio is None else f"{ratio:.3f}",
            "-" if s["pipeline_agreement"] is None else f"{s['pipeline_agreement']:.1%}",
            s["pipeline_head"] or ("zero-shot" if s["per_label"] == 0 else "-"),
        )
    return t


def plot_curve(path: Path, r: Mapping[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here
    import matplotlib.pyplot as plt

    steps = r["steps"]
    # 0 labels on a log axis: drawn at 2 and labelled 0.
    xs = [s["per_label"] if s["per_label"] > 0 else 2 for s in steps]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    ax.plot(xs, [s["accuracy"] for s in steps], "o-", color="C0", label="zero-shot + learned head (in-process)")
    pipeline = [(x, s["pipeline_accuracy"]) for x, s in zip(xs, steps, strict=True) if s["pipeline_accuracy"]]
    if pipeline:
        ax.plot(*zip(*pipeline, strict=True), "s--", color="C2", label="through the pipeline (events.enriched)")
    probe = [(x, s["probe_accuracy"]) for x, s in zip(xs, steps, strict=True) if s["probe_accuracy"] is not None]
    if probe:
        ax.plot(*zip(*probe, strict=True), "^:", color="C1", label="offline logistic-regression probe")
    ax.axhline(r["majority_baseline"], color="grey", linestyle=":", label="majority class")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(s["per_label"]) for s in steps])
    ax.set_xlabel("feedback labels per class")
    ax.set_ylabel(f"accuracy on {r['test_size']} held-out events")
    ax.set_title(f"learning from analysts: {r['dataset']}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
