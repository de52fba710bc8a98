"""The peer, for the benchmark: a Quix Streams app that applies the same ONNX classifier per message.

    python -m bench.quix_app      (settings from SLMSTREAM_* like the real worker)

Reads settings.topics.events, writes settings.topics.enriched keyed by the event id. Same model file and
threads as ours (with `model.encoder: identity`, no model call: parse, add the field, produce — the
`bench identity` peer); librdkafka's fetch wait set to ours (tansu answers a waiting fetch only when it expires)
and a 2 ms linger like ours. Quix Streams processes one message at a time on one thread: the model call
is per message, as its docs show for ML inference.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from bench.events import IDENTITY_ANALYSIS
from pipeline.config import ConfigError, Settings, load_settings
from pipeline.model.identity import IDENTITY


def bootstrap_of(broker_url: str) -> str:
    """kafka://h1:9092;kafka://h2:9092 → h1:9092,h2:9092 (librdkafka's bootstrap.servers)."""
    return ",".join(u.split("://", 1)[-1] for u in broker_url.split(";"))


def build(settings: Settings) -> Any:
    from quixstreams import Application

    app = Application(
        broker_address=bootstrap_of(settings.broker),
        consumer_group=settings.app_id,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        consumer_extra_config={"fetch.wait.max.ms": settings.fetch_max_wait_ms, "session.timeout.ms": 6000},
        producer_extra_config={"linger.ms": 2},
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    events = app.topic(settings.topics.events, value_deserializer="json", key_deserializer="bytes")
    results = app.topic(settings.topics.enriched, value_serializer="json", key_serializer="bytes")

    sdf = app.dataframe(events).apply(_add_field if settings.model.encoder == IDENTITY else _classifier(settings))
    sdf.to_topic(results, key=lambda doc: str(doc["id"]).encode())
    return app  # the app tracks its dataframes itself


def _add_field(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "analysis": IDENTITY_ANALYSIS}


def _classifier(settings: Settings) -> Callable[[dict[str, Any]], dict[str, Any]]:
    from pipeline.runtime import load_classifier

    classifier = load_classifier(settings, settings.model.encoder)

    def classify(doc: dict[str, Any]) -> dict[str, Any]:
        (result,) = classifier.classify([doc["text"]])
        return {**doc, "analysis": {"label": result.label, "score": result.score}}

    return classify


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"quix bench app: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    build(settings).run()  # until SIGTERM / SIGINT


if __name__ == "__main__":
    main()
