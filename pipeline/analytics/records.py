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
    reason: str | None = None,
) -> SummaryRecord:
    record: SummaryRecord = {
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
    if reason is not None:  # why an extractive summary, where there is more to say than the window's size
        record["reason"] = reason
    return record


def alert_record(
    spike: Any, window: Window, explanation: str, *, method: str, model: str, reason: str | None = None
) -> AlertRecord:
    """`spike` is an alerts.Spike."""
    record: AlertRecord = {
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
    if reason is not None:
        record["reason"] = reason
    return record


# ---- the readers' rule for duplicates and revisions (schemas/summary.schema.json, stats.schema.json) ----------
def record_identity(doc: dict[str, Any]) -> tuple[Any, ...] | None:
    """What a summary or stats record is about (key, window, part / window); None for any other record."""
    window = doc.get("window")
    if not isinstance(window, dict) or "start_ms" not in window:
        return None
    if "summary" in doc and "key" in doc:
        return ("summary", doc["key"], window["start_ms"], window.get("part", 0))
    if "sources" in doc and "events" in doc:
        return ("stats", window["start_ms"], window.get("part", 0))
    return None


def record_rank(doc: dict[str, Any]) -> tuple[bool, int]:
    """Of several records with one identity keep the highest (final, revision); records from before
    revisions existed count as final revision 1."""
    try:
        return bool(doc.get("final", True)), int(doc.get("revision", 1))
    except (TypeError, ValueError):
        return True, 1


class KeepHighest:
    """Lets through a summary or stats record only when it ranks above every record of the same identity seen
    so far (other records always): applied to a stream, what is shown is the readers' rule. Remembers at most
    `limit` identities (the oldest are forgotten first)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._best: dict[tuple[Any, ...], tuple[bool, int]] = {}

    def admit(self, doc: dict[str, Any]) -> bool:
        ident = record_identity(doc)
        if ident is None:
            return True
        rank = record_rank(doc)
        best = self._best.get(ident)
        if best is not None and rank <= best:
            return False
        self._best.pop(ident, None)
        self._best[ident] = rank
        if len(self._best) > self.limit:
            del self._best[next(iter(self._best))]
        return True
