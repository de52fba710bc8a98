"""Readable summary, alert and stats records for `slmstream tail` and the demo."""

from __future__ import annotations

import orjson

from pipeline.cli.analytics_render import render_analytics, render_analytics_line
from pipeline.cli.topics import render

WINDOW = {
    "start": "2026-11-27T10:00:00.000Z",
    "end": "2026-11-27T10:01:00.000Z",
    "start_ms": 1795773600000,
    "end_ms": 1795773660000,
    "part": 0,
    "closed_by": "time",
}
SUMMARY = {
    "key": "cust-1",
    "window": WINDOW,
    "count": 12,
    "late": 0,
    "labels": {"billing": 10, "praise": 2},
    "summary": "Customers were charged twice.",
    "method": "abstractive",
    "model": "smollm2-135m-int8",
    "latency_ms": 2300.0,
    "budget_met": True,
    "sample_ids": ["a", "b"],
}
ALERT = {
    "label": "billing",
    "window": WINDOW,
    "count": 30,
    "baseline": {"mean": 4.0, "std": 1.5, "windows": 10},
    "ratio": 7.5,
    "z": 17.3,
    "rule": "ratio+z",
    "sample_ids": ["a", "b", "c", "d"],
    "explanation": "Double charges after the price change.",
    "method": "abstractive",
    "model": "smollm2-135m-int8",
}
STATS = {
    "window": WINDOW,
    "events": 50,
    "late": 0,
    "labels": {"billing": 30},
    "sources": {"email": 50},
    "latency_ms": {"mean": 40.0, "p95": 90.0},
}


def test_summary_alert_and_stats_render_with_their_evidence() -> None:
    s = render(orjson.dumps(SUMMARY), False)
    assert "cust-1" in s and "10:00:00-10:01:00" in s and "abstractive" in s and "charged twice" in s
    a = render(orjson.dumps(ALERT), False)
    assert "ALERT" in a and "30 events vs baseline 4.0" in a and "x7.5" in a and "Double charges" in a
    st = render(orjson.dumps(STATS), False)
    assert "50 ev" in st and "p95 90 ms" in st and "email 50" in st


def test_an_empty_key_and_a_later_part_are_shown() -> None:
    doc = SUMMARY | {"key": "", "window": WINDOW | {"part": 2}, "budget_met": False}
    out = render_analytics(doc)
    assert out is not None and '""' in out and "#2" in out and "over budget" in out


def test_records_that_only_look_alike_fall_back() -> None:
    assert render_analytics({"summary": "x", "window": {}, "key": "k"}) is None  # missing fields
    assert render_analytics({"text": "x"}) is None
    assert render_analytics_line({"summary": 1}) == ""


def test_panel_line_is_short() -> None:
    line = render_analytics_line(SUMMARY | {"summary": "word " * 100}, width=60)
    assert "..." in line and len(line) < 90


def test_tail_resolves_the_short_topic_names(monkeypatch) -> None:
    from pipeline.cli import topics

    seen: list[str] = []

    async def fake_tail(topic, *args, **kwargs) -> None:
        seen.append(topic)

    monkeypatch.setattr(topics, "_tail", fake_tail)
    monkeypatch.setenv("SLMSTREAM_TOPICS__ALERTS", "my.alerts")
    for name in ("summaries", "alerts", "stats", "events.enriched"):
        topics.tail(name, n=10, follow=False, as_json=False, broker=None)
    assert seen == ["events.summaries", "my.alerts", "events.stats", "events.enriched"]


def test_tail_shows_a_window_again_only_for_a_higher_revision() -> None:
    from pipeline.analytics.records import KeepHighest
    from pipeline.cli.topics import admitted

    keep = KeepHighest()
    base = dict(STATS, window=dict(STATS["window"]))
    seq = [
        dict(base, revision=1, final=False),
        dict(base, revision=2, final=True),
        dict(base, revision=2, final=True),
        dict(base, revision=3, final=False),
        dict(SUMMARY, revision=5, final=True),
        dict(SUMMARY, revision=4, final=True),
        {"not": "analytics"},
    ]
    shown = [admitted(keep, orjson.dumps(d)) for d in seq] + [admitted(keep, b"not json")]
    assert shown == [True, True, False, False, True, False, True, True]
