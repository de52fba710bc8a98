"""pipeline/learning/feedback.py: feedback bytes → Feedback or a Rejection with the DLQ reason; the schema
agrees with the parser on the shapes it accepts."""

from __future__ import annotations

import jsonschema
import orjson
import pytest

from pipeline.config import InputSettings
from pipeline.ingest.validate import Rejection
from pipeline.learning.feedback import Feedback, example_key, feedback_json, feedback_key, parse_feedback
from schemas import DLQ_ERROR_TYPES, load_schema

KNOWN = {"billing", "shipping"}
LIMITS = InputSettings()


def parse(doc: object) -> Feedback | Rejection:
    return parse_feedback(orjson.dumps(doc), KNOWN, LIMITS)


def test_the_three_shapes() -> None:
    assert parse({"id": "e1", "label": "billing", "by": "ana", "ts": 1_800_000_000_000}) == Feedback(
        "billing", id="e1", by="ana", ts_ms=1_800_000_000_000
    )
    assert parse({"text": "charged twice", "label": "shipping"}) == Feedback("shipping", text="charged twice")
    new = parse({"label": "fraud", "description": "Someone used the card without the owner's consent."})
    assert isinstance(new, Feedback) and new.is_new_label and new.label == "fraud"
    assert parse({"id": "e1", "label": "billing", "ts": "2026-12-06T21:00:00Z"}) == Feedback(
        "billing", id="e1", ts_ms=1_796_590_800_000
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty_message"),
        (b"{not json", "not_json"),
        (b"\xff\xfe", "not_utf8"),
        (b"[1, 2]", "not_object"),
        (orjson.dumps({"id": "e1"}), "missing_field"),
        (orjson.dumps({"label": "billing"}), "missing_field"),
        (orjson.dumps({"id": "e1", "text": "t", "label": "billing"}), "missing_field"),
        (orjson.dumps({"id": "e1", "label": "nope"}), "unknown_label"),
        (orjson.dumps({"text": "t", "label": "nope"}), "unknown_label"),
        (orjson.dumps({"label": "billing", "description": "again"}), "label_exists"),
        (orjson.dumps({"id": 7, "label": "billing"}), "wrong_type"),
        (orjson.dumps({"id": "e1", "label": "billing", "extra": 1}), "wrong_type"),
        (orjson.dumps({"id": "e1", "label": "bad name!"}), "wrong_type"),
        (orjson.dumps({"label": "unknown", "description": "reserved"}), "wrong_type"),
        (orjson.dumps({"id": "e1", "label": "billing", "ts": 12}), "bad_timestamp"),
        (orjson.dumps({"text": "   ", "label": "billing"}), "empty_text"),
        (orjson.dumps({"text": "x" * (LIMITS.max_text_chars + 1), "label": "billing"}), "text_too_long"),
        (orjson.dumps({"id": "x" * 300, "label": "billing"}), "wrong_type"),
    ],
)
def test_bad_feedback_is_a_rejection_with_a_dlq_reason(value: bytes, reason: str) -> None:
    result = parse_feedback(value, KNOWN, LIMITS)
    assert isinstance(result, Rejection), result
    assert result.type == reason, result
    assert result.type in DLQ_ERROR_TYPES


@pytest.mark.parametrize(
    "doc",
    [
        {"id": "e1", "label": "billing"},
        {"text": "charged twice", "label": "billing", "by": "ana", "ts": 1_800_000_000_000},
        {"label": "fraud", "description": "card used without consent"},
    ],
)
def test_what_the_parser_accepts_the_schema_accepts(doc: dict) -> None:
    assert isinstance(parse(doc), Feedback)
    jsonschema.validate(doc, load_schema("feedback"))


@pytest.mark.parametrize(
    "doc", [{"id": "e1", "text": "t", "label": "billing"}, {"label": "billing"}, {"id": "e1", "label": "b", "x": 1}]
)
def test_what_the_schema_refuses_the_parser_refuses(doc: dict) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, load_schema("feedback"))
    assert isinstance(parse(doc), Rejection)


def test_published_bytes_round_trip_and_keys() -> None:
    value = feedback_json("billing", id="e1", by="cli")
    assert parse_feedback(value, KNOWN, LIMITS) == Feedback("billing", id="e1", by="cli")
    assert feedback_key("billing") == b"billing"
    assert example_key("same text") == example_key("same text") != example_key("other text")
