"""Build the summary, alert and stats records (schemas/summary.schema.json, alert.schema.json, stats.schema.json)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.analytics.windows import Window
from schemas.types import AlertRecord, SummaryRecord, WindowBounds

MAX_SAMPLE_IDS = 5


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000.0, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def window_doc(window: Window) -> WindowBounds:
    return {
        "start": rfc3339(window.start_ms),
        "end": rfc3339(window.end_ms),
        "start_ms": window.start_ms,
        "end_ms": window.end_ms,
        "part": window.part,
        "closed_by": window.reason or "time",
    }


def summary_record(
    window: Window,
    labels: dict[str, int],
    summary: str,
    *,
    method: str,
    model: str,
    latency_ms: float,
    budget_met: bool,
    sample_ids: list[str],
) -> SummaryRecord:
    return {
        "key": window.key,
        "window": window_doc(window),
        "count": len(window.events),
        "late": window.late,
        "labels": labels,
        "summary": summary,
        "method": method,
        "model": model,
        "latency_ms": round(latency_ms, 1),
        "budget_met": budget_met,
        "sample_ids": sample_ids[:MAX_SAMPLE_IDS],
        # A record rebuilt after a crash from part of the window's records covers fewer: readers keep, per key,
        # window and part, the highest (final, revision).
        "revision": len(window.events),
        "final": True,
    }


def alert_record(spike: Any, window: Window, explanation: str, *, method: str, model: str) -> AlertRecord:
    """`spike` is an alerts.Spike."""
    return {
        "label": spike.label,
        "window": window_doc(window),
        "count": spike.count,
        "baseline": {"mean": round(spike.mean, 3), "std": round(spike.std, 3), "windows": spike.windows},
        "ratio": round(spike.ratio, 3),
        "z": round(spike.z, 3) if spike.z is not None else None,
        "rule": spike.rule,
        "sample_ids": spike.sample_ids[:MAX_SAMPLE_IDS],
        "explanation": explanation,
        "method": method,
        "model": model,
    }
