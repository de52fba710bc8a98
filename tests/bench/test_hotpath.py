"""bench/hotpath.py: the in-process hot path carries every event through to a record and a done offset."""

from __future__ import annotations

import asyncio

from bench.events import load_docs
from bench.hotpath import run_hotpath
from pipeline.config import load_settings
from pipeline.model.identity import IDENTITY


def test_every_event_becomes_a_record_and_a_done_offset() -> None:
    s = load_settings()
    settings = s.model_copy(
        update={
            "model": s.model.model_copy(update={"encoder": IDENTITY}),
            "batching": s.batching.model_copy(update={"budget_ms": 600_000.0}),
        }
    )
    r = asyncio.run(run_hotpath(settings, load_docs(), 640))
    assert r["all_done"]
    assert r["events"] == 640
    assert r["producer_batches"] >= settings.topics.partitions  # each partition's records went out in batches
    assert r["cpu_us_per_event"] > 0
