"""Readable one-record renderings of summary, alert and stats records (for `slmstream tail` and the demo)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.markup import escape

# `slmstream tail summaries` etc.: short names for the analytics topics (the names come from the settings).
TOPIC_ALIASES = ("summaries", "stats", "alerts")


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000.0, UTC).strftime("%H:%M:%S")


def _window(w: dict[str, Any]) -> str:
    part = f" #{w['part']}" if w.get("part") else ""
    return f"{_clock(w['start_ms'])}-{_clock(w['end_ms'])}{part}"


def _labels(counts: dict[str, int], top: int = 3) -> str:
    items = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{k} {v}" for k, v in items)


def is_summary(doc: dict[str, Any]) -> bool:
    return "summary" in doc and "window" in doc and "key" in doc


def is_alert(doc: dict[str, Any]) -> bool:
    return "explanation" in doc and "baseline" in doc


def is_stats(doc: dict[str, Any]) -> bool:
    return "sources" in doc and "window" in doc and "events" in doc


def render_summary(doc: dict[str, Any]) -> str:
    method = doc["method"]
    colour = "green" if method == "abstractive" else "cyan"
    budget = "" if doc.get("budget_met", True) else " [yellow]over budget[/]"
    key = doc["key"] or '""'
    return (
        f"[bold]{escape(key):<12}[/] {_window(doc['window'])} {doc['count']:>4} ev  [{colour}]{method:<11}[/]"
        f" {doc['latency_ms'] / 1000:5.1f} s{budget}  ({escape(_labels(doc['labels']))})\n"
        f"    {escape(doc['summary'])}"
    )


def render_alert(doc: dict[str, Any]) -> str:
    b = doc["baseline"]
    z = f", z {doc['z']:.1f}" if doc.get("z") is not None else ""
    return (
        f"[bold red]ALERT[/] [bold]{escape(doc['label'])}[/] {_window(doc['window'])}: {doc['count']} events vs "
        f"baseline {b['mean']:.1f} ± {b['std']:.1f} over {b['windows']} windows (x{doc['ratio']:.1f}{z}; "
        f"{doc['rule']})\n    {escape(doc['explanation'])}  [dim]({doc['method']}; e.g. "
        f"{escape(', '.join(doc['sample_ids'][:3]))})[/]"
    )


def render_stats(doc: dict[str, Any]) -> str:
    lat = doc["latency_ms"]
    p95 = f", p95 {lat['p95']:.0f} ms" if lat.get("p95") is not None else ""
    revision = doc.get("revision", 1)
    status = "" if doc.get("final", True) else f" [yellow]not final ({doc.get('partitions', '?')} partitions)[/]"
    status += f" [dim]revision {revision}[/]" if revision > 1 else ""
    return (
        f"[dim]stats[/] {_window(doc['window'])} {doc['events']:>5} ev{p95}{status}  "
        f"labels: {escape(_labels(doc['labels'], 4))}  sources: {escape(_labels(doc['sources'], 3))}"
    )


def render_analytics(doc: dict[str, Any]) -> str | None:
    """The rendering of a summary, alert or stats record; None for any other record."""
    try:
        if is_alert(doc):
            return render_alert(doc)
        if is_summary(doc):
            return render_summary(doc)
        if is_stats(doc):
            return render_stats(doc)
    except (KeyError, TypeError, ValueError):  # a record that only looks like one: shown raw by the caller
        return None
    return None


def render_analytics_line(doc: dict[str, Any], width: int = 100) -> str:
    """One short line for a live panel: the latest summary or alert."""
    try:
        if is_alert(doc):
            text = f"ALERT {doc['label']} x{doc['ratio']:.1f}: {doc['explanation']}"
            colour = "bold red"
        else:
            text = f"{doc['key'] or '-'} {_window(doc['window'])} {doc['count']} ev {doc['method']}: {doc['summary']}"
            colour = "green"
    except (KeyError, TypeError, ValueError):
        return ""
    text = " ".join(text.split())
    return f"[{colour}]{escape(text if len(text) <= width else text[: width - 3] + '...')}[/]"
