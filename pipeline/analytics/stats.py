"""Counts of one window's events per label (the stats records themselves are merged in merge.py)."""

from __future__ import annotations

from collections import Counter

from pipeline.analytics.windows import Window


def label_counts(window: Window) -> dict[str, int]:
    return dict(Counter(e.label for e in window.events).most_common())
