"""The figures `slmstream bench summarize` reports, from summary records and the worker's log lines."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.summarize import generated_lines, report


def summary(i: int, method: str, count: int, latency_ms: float, met: bool = True) -> dict:
    return {"method": method, "count": count, "latency_ms": latency_ms, "budget_met": met, "_sent_at": 100.0 + i}


def test_report_counts_rates_and_shares() -> None:
    s = [
        summary(0, "abstractive", 10, 5000),
        summary(1, "extractive", 10, 1000),
        summary(2, "extractive", 1, 100),  # too small for the generator: not a fallback
        summary(4, "abstractive", 10, 9000, met=False),
    ]
    calls = [{"prompts": 2, "new_tokens": 60, "prefill_ms": 1000, "decode_ms": 2000}]
    r = report(s, calls, min_events=3)
    assert r["summaries"] == 4 and r["summaries_per_s"] == pytest.approx(1.0)  # written over 4 s
    assert r["extractive_share"] == 0.5 and r["fallback_share"] == pytest.approx(1 / 3)
    assert r["budget_met_share"] == 0.75
    assert r["latency_ms"]["p50"] == pytest.approx(3000)
    assert r["generator"]["new_tokens_per_busy_s"] == pytest.approx(20.0)
    assert r["generator"]["new_tokens_per_s_wall"] == pytest.approx(15.0)


def test_report_of_nothing() -> None:
    r = report([], [], min_events=3)
    assert r["summaries"] == 0 and r["summaries_per_s"] is None and r["latency_ms"]["p50"] is None


def test_generated_lines_are_read_from_the_json_log(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    lines = [
        orjson.dumps({"event": "generated", "prompts": 1, "new_tokens": 5}),
        b'not json with "generated" in it',
        orjson.dumps({"event": "batch", "size": 3}),
    ]
    log.write_bytes(b"\n".join(lines))
    assert generated_lines(log) == [{"event": "generated", "prompts": 1, "new_tokens": 5}]
