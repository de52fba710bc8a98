"""The Quix Streams peer's settings: librdkafka's bootstrap list from our broker URL."""

from __future__ import annotations

from bench.quix_app import bootstrap_of


def test_bootstrap_of_broker_urls() -> None:
    assert bootstrap_of("kafka://127.0.0.1:9092") == "127.0.0.1:9092"
    assert bootstrap_of("kafka://192.0.2.1:9092;kafka://198.51.100.2:9093") == "192.0.2.1:9092,198.51.100.2:9093"
    assert bootstrap_of("127.0.0.1:9092") == "127.0.0.1:9092"
