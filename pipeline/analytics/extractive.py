"""Extractive summaries: the texts nearest the centroid of a window's embeddings; for a window spread over
several labels, per label, the texts nearest that label's centroid.

Deterministic: ties (equal similarity) go to the earlier text, duplicates are skipped, and the chosen texts keep
the order in which they arrived.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_CHARS = 240  # per chosen text in the summary


def sample_evenly(n: int, limit: int) -> list[int]:
    """Up to `limit` indexes spread evenly over range(n), first and last included: which texts to encode."""
    if n <= limit:
        return list(range(n))
    if limit == 1:
        return [0]
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def nearest_to_centroid(embeddings: np.ndarray, k: int) -> list[int]:
    """Indexes of the k rows nearest (cosine) the mean of the L2-normalised rows, most central first."""
    if len(embeddings) == 0 or k <= 0:
        return []
    centroid = embeddings.mean(axis=0)
    norm = float(np.linalg.norm(centroid))
    if norm > 0:
        centroid = centroid / norm
    sims = embeddings @ centroid
    order = sorted(range(len(sims)), key=lambda i: (-round(float(sims[i]), 6), i))  # stable on float noise
    return order[:k]


def extractive_summary(texts: Sequence[str], embeddings: np.ndarray, k: int) -> tuple[str, list[int]]:
    """The summary text (the chosen texts joined) and their indexes in `texts`, in arrival order."""
    chosen: list[int] = []
    seen: set[str] = set()
    for i in nearest_to_centroid(embeddings, len(texts)):
        norm = " ".join(texts[i].split()).lower()
        if norm in seen:
            continue
        seen.add(norm)
        chosen.append(i)
        if len(chosen) == k:
            break
    chosen.sort()
    return " | ".join(_clip(texts[i]) for i in chosen), chosen


def labelled_extractive_summary(
    texts: Sequence[str], labels: Sequence[str], embeddings: np.ndarray, k: int, groups: Sequence[tuple[str, int]]
) -> tuple[str, list[int]]:
    """A window spread over several labels: per dominant label (name, its events in the window), its texts
    nearest its own centroid, `k` split among the labels (at least one each), as
    "label (events): text | text; label (events): text". The chosen indexes, label by label."""
    per_label = max(1, k // max(1, len(groups)))
    parts: list[str] = []
    chosen: list[int] = []
    for label, count in groups:
        rows = [i for i, lb in enumerate(labels) if lb == label]
        if not rows:  # the texts are a sample of the window: a label may have none in it
            continue
        _, picked = extractive_summary([texts[i] for i in rows], embeddings[rows], per_label)
        parts.append(f"{label} ({count}): " + " | ".join(_clip(texts[rows[p]]) for p in picked))
        chosen.extend(rows[p] for p in picked)
    return "; ".join(parts), chosen


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."
