"""Counts of one global window (all keys): events, per label, per source, and latency (stats.schema.json)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from pipeline.analytics.records import window_doc
from pipeline.analytics.windows import Window


def label_counts(window: Window) -> dict[str, int]:
    return dict(Counter(e.label for e in window.events).most_common())


def stats_record(window: Window) -> dict[str, Any]:
    """The `stats` record of a closed global window (events without a source count under "")."""
    latencies = np.array([e.latency_ms for e in window.events if e.latency_ms is not None], dtype=np.float64)
    return {
        "window": window_doc(window),
        "events": len(window.events),
        "late": window.late,
        "labels": label_counts(window),
        "sources": dict(Counter(e.source for e in window.events).most_common()),
        "latency_ms": {
            "mean": round(float(latencies.mean()), 2) if latencies.size else None,
            "p95": round(float(np.percentile(latencies, 95)), 2) if latencies.size else None,
        },
    }
