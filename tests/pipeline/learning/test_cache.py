"""pipeline/learning/cache.py: the recent events, filled per delivered enriched batch, bounded."""

from __future__ import annotations

from pipeline.learning.cache import RecentEvents
from pipeline.output.observers import Delivered
from schemas import Event, Origin


def event(i: int) -> Event:
    return Event(f"e{i}", f"text {i}", 1_800_000_000_000, {}, Origin("events", 0, i))


def test_filled_per_enriched_batch_and_bounded() -> None:
    cache = RecentEvents(3)
    events = [event(i) for i in range(4)]
    cache.on_delivered(Delivered("dlq", 2, 0.0, reasons=["not_json", "not_json"]))
    assert len(cache) == 0
    cache.on_delivered(Delivered("enriched", 4, 0.0, labels=["a"] * 4, events=events))
    assert len(cache) == 3
    assert cache.get("e0") is None  # the oldest went first
    assert cache.get("e3") == "text 3"
    cache.put("e1", "text 1")  # seen again: now the newest
    cache.put("e9", "text 9")
    assert cache.get("e1") == "text 1" and cache.get("e2") is None


def test_bounded_by_characters_too() -> None:
    cache = RecentEvents(100, max_chars=10)
    cache.put("a", "12345")
    cache.put("b", "12345")
    cache.put("a", "123")  # replaced: its old text no longer counts
    assert cache.chars == 8
    cache.put("c", "1234")
    assert cache.get("b") is None and cache.get("a") == "123" and cache.chars == 7


def test_capacity_zero_keeps_nothing() -> None:
    cache = RecentEvents(0)
    cache.on_delivered(Delivered("enriched", 1, 0.0, labels=["a"], events=[event(1)]))
    assert len(cache) == 0
