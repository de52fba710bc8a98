"""The aiokafka-alone peer of `bench identity`: what it does to each record (no broker)."""

from __future__ import annotations

import orjson

from bench.aiokafka_app import enrich
from bench.events import IDENTITY_ANALYSIS


def test_enrich_keys_by_the_event_id_and_adds_the_field() -> None:
    key, value = enrich(b'{"ts":1,"id":"tp-000007","text":"hi","key":"c1"}')
    assert key == b"tp-000007"
    assert orjson.loads(value) == {"ts": 1, "id": "tp-000007", "text": "hi", "key": "c1", "analysis": IDENTITY_ANALYSIS}
