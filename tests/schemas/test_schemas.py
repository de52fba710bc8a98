"""schemas/: the JSON Schema files are valid, and the records pipeline/output/records.py builds match them."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from pipeline.output.records import (
    ORIGIN_HEADER,
    ORIGIN_TS_HEADER,
    Classification,
    ModelInfo,
    deferred_headers,
    dlq_record,
    enriched_record,
    enriched_records,
    origin_of_deferred,
)
from schemas import DLQ_ERROR_TYPES, Event, Origin, load_schema

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
NAMES = ["event", "enriched", "dlq"]


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name), format_checker=FormatChecker())


def assert_valid(name: str, doc: object) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator(name).iter_errors(doc)]
    assert not errors, errors


# ---- the schema files --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_schema_files_are_valid_draft_2020_12(name: str) -> None:
    path = SCHEMA_DIR / f"{name}.schema.json"
    schema = json.loads(path.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"slmstream/{name}.schema.json"
    assert schema["type"] == "object"
    assert load_schema(name) == schema  # the packaged copy is the file


def test_dlq_error_types_equal_the_schema_enum() -> None:
    enum = load_schema("dlq")["properties"]["error"]["properties"]["type"]["enum"]
    assert len(set(DLQ_ERROR_TYPES)) == len(DLQ_ERROR_TYPES)
    assert list(DLQ_ERROR_TYPES) == enum


def test_enriched_schema_lists_the_event_fields() -> None:
    event_props = set(load_schema("event")["properties"])
    enriched_props = set(load_schema("enriched")["properties"])
    assert event_props - {"ts"} <= enriched_props
    assert {"ts", "analysis"} <= enriched_props


# ---- enriched records --------------------------------------------------------------------------------------
ORIGIN = Origin("events", 2, 1234, key=b"cust-7", headers=(("trace", b"abc"), ("empty", None)), timestamp_ms=1)
MODEL = ModelInfo("minilm-l6-int8", "sha256:0123456789abcdef")


def make_event(**fields: object) -> Event:
    doc = {"text": "I was charged twice", "source": "email", "key": "cust-7", "attrs": {"region": "eu"}, **fields}
    return Event(id="evt-1", text=str(doc["text"]), ts_ms=1_795_812_754_000, fields=doc, origin=ORIGIN)


def test_enriched_record_validates_and_carries_the_event() -> None:
    event = make_event(ts="2026-11-27T20:52:34Z", priority=3)
    result = Classification("billing", 0.912345, {"billing": 0.912345, "shipping": 0.087655})
    raw = enriched_record(
        event,
        result,
        MODEL,
        "sha256:abc",
        deadline_met=True,
        degraded=False,
        queue_ms=1.23456,
        model_ms=7.891,
        total_ms=42.0,
    )
    doc = orjson.loads(raw)
    assert_valid("enriched", doc)
    assert doc["id"] == "evt-1"  # resolved id
    assert doc["ts"] == 1_795_812_754_000  # resolved, epoch ms (the string is replaced)
    assert doc["priority"] == 3  # extra fields pass through
    assert doc["attrs"] == {"region": "eu"}
    a = doc["analysis"]
    assert a["label"] == "billing"
    assert a["score"] == 0.9123
    assert a["scores"] == {"billing": 0.9123, "shipping": 0.0877}
    assert a["model"] == {"name": "minilm-l6-int8", "hash": "sha256:0123456789abcdef"}
    assert a["taxonomy_version"] == "sha256:abc"
    assert (a["deadline_met"], a["degraded"], a["deferred"]) == (True, False, False)
    assert a["latency_ms"] == {"queue": 1.23, "model": 7.89, "total": 42.0}
    # The event's own dict is not modified.
    assert event.fields["ts"] == "2026-11-27T20:52:34Z"
    assert "analysis" not in event.fields


def test_enriched_record_for_unknown_degraded_deferred() -> None:
    event = make_event()
    event.deferred = True
    event.id = "events:2:1234"
    raw = enriched_record(
        event,
        Classification("unknown", 0.2, {"billing": 0.2, "shipping": 0.8 - 0.0}),
        MODEL,
        "v1",
        deadline_met=False,
        degraded=True,
        queue_ms=0.0,
        model_ms=0.0,
        total_ms=12345.678,
    )
    doc = orjson.loads(raw)
    assert_valid("enriched", doc)
    assert doc["id"] == "events:2:1234"
    assert doc["analysis"]["label"] == "unknown"
    assert (doc["analysis"]["deadline_met"], doc["analysis"]["degraded"], doc["analysis"]["deferred"]) == (
        False,
        True,
        True,
    )


def test_enriched_schema_rejects_a_broken_record() -> None:
    raw = enriched_record(
        make_event(),
        Classification("billing", 0.9, {"billing": 0.9}),
        MODEL,
        "v1",
        deadline_met=True,
        degraded=False,
        queue_ms=0,
        model_ms=0,
        total_ms=0,
    )
    doc = orjson.loads(raw)
    del doc["analysis"]["latency_ms"]
    assert not validator("enriched").is_valid(doc)


def test_enriched_record_carries_the_language_and_the_encoder_that_read_it() -> None:
    multilingual = ModelInfo("use-m-v3-int8", "sha256:fedcba9876543210")
    results = [
        Classification("billing", 0.9, {"billing": 0.9, "shipping": 0.1}, lang="de", model=multilingual),
        Classification("shipping", 0.8, {"billing": 0.2, "shipping": 0.8}, lang="fi", lang_supported=False),
        Classification("shipping", 0.8, {"billing": 0.2, "shipping": 0.8}),  # no language ID ran
    ]
    docs = [
        orjson.loads(raw)
        for raw in enriched_records(
            [make_event()] * 3,
            results,
            MODEL,
            "v1",
            deadline_met=[True] * 3,
            degraded=False,
            queue_ms=[0.0] * 3,
            model_ms=1.0,
            total_ms=[1.0] * 3,
        )
    ]
    for doc in docs:
        assert_valid("enriched", doc)
    a = [d["analysis"] for d in docs]
    assert (a[0]["lang"], a[0]["lang_supported"], a[0]["model"]["name"]) == ("de", True, "use-m-v3-int8")
    assert (a[1]["lang"], a[1]["lang_supported"], a[1]["model"]["name"]) == ("fi", False, "minilm-l6-int8")
    assert "lang" not in a[2] and "lang_supported" not in a[2]
    # the one-record builder says the same
    one = orjson.loads(
        enriched_record(
            make_event(),
            results[0],
            MODEL,
            "v1",
            deadline_met=True,
            degraded=False,
            queue_ms=0,
            model_ms=1.0,
            total_ms=1.0,
        )
    )
    assert one["analysis"] == {**a[0], "latency_ms": one["analysis"]["latency_ms"]}


@pytest.mark.parametrize("lang", ["", "EN", "english", "e1"])
def test_enriched_schema_rejects_a_language_that_is_not_a_code(lang: str) -> None:
    raw = enriched_record(
        make_event(),
        Classification("billing", 0.9, {"billing": 0.9}, lang="en"),
        MODEL,
        "v1",
        deadline_met=True,
        degraded=False,
        queue_ms=0,
        model_ms=0,
        total_ms=0,
    )
    doc = orjson.loads(raw)
    doc["analysis"]["lang"] = lang
    assert not validator("enriched").is_valid(doc)


# ---- DLQ records -------------------------------------------------------------------------------------------
def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


@pytest.mark.parametrize("error_type", DLQ_ERROR_TYPES)
def test_dlq_record_validates_for_every_error_type(error_type: str) -> None:
    before = int(time.time() * 1000)
    doc = orjson.loads(dlq_record(error_type, "what went wrong", ORIGIN, b'{"text": 42}'))
    after = int(time.time() * 1000)
    assert_valid("dlq", doc)
    assert doc["error"] == {"type": error_type, "message": "what went wrong"}
    assert before <= doc["failed_at"] <= after
    o = doc["original"]
    assert (o["topic"], o["partition"], o["offset"], o["timestamp_ms"]) == ("events", 2, 1234, 1)
    assert unb64(o["value_b64"]) == b'{"text": 42}'
    assert unb64(o["key"]) == b"cust-7"
    assert o["headers"] == [["trace", b64(b"abc")], ["empty", None]]


def test_dlq_record_with_null_value_key_and_timestamp() -> None:
    origin = Origin("events", 0, 0)
    doc = orjson.loads(dlq_record("empty_message", "message value is empty or null", origin, None))
    assert_valid("dlq", doc)
    o = doc["original"]
    assert (o["key"], o["value_b64"], o["headers"], o["timestamp_ms"]) == (None, None, [], None)


def test_dlq_schema_rejects_unknown_error_type() -> None:
    doc = orjson.loads(dlq_record("model_error", "x", ORIGIN, b"x"))
    doc["error"]["type"] = "cosmic_ray"
    assert not validator("dlq").is_valid(doc)


header_values = st.one_of(st.none(), st.binary(max_size=40))


@settings(max_examples=150, deadline=None)
@given(
    value=st.one_of(st.none(), st.binary(max_size=300)),
    key=st.one_of(st.none(), st.binary(max_size=40)),
    headers=st.lists(st.tuples(st.text(max_size=10), header_values), max_size=5),
)
def test_dlq_record_keeps_the_original_bytes(
    value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes | None]]
) -> None:
    origin = Origin("events", 1, 99, key=key, headers=tuple(headers), timestamp_ms=1_795_812_754_000)
    doc = orjson.loads(dlq_record("not_utf8", "bad bytes", origin, value))
    assert_valid("dlq", doc)
    o = doc["original"]
    assert unb64(o["value_b64"]) == value
    assert unb64(o["key"]) == key
    assert [(name, unb64(v)) for name, v in o["headers"]] == headers


# ---- events.deferred headers -------------------------------------------------------------------------------
def as_received(headers: list[tuple[str, bytes]], *, ts: int | None = 1_795_812_999_000) -> Origin:
    """The Origin of the events.deferred message that carries `headers`."""
    return Origin("events.deferred", 0, 5, key=b"cust-7", headers=tuple(headers), timestamp_ms=ts)


def test_deferred_headers_round_trip_an_origin() -> None:
    original = Origin("events", 3, 42, key=b"cust-7", headers=(("trace", b"abc"),), timestamp_ms=1_795_812_754_000)
    headers = deferred_headers(original)
    assert headers == [
        ("trace", b"abc"),
        (ORIGIN_HEADER, b"events:3:42"),
        (ORIGIN_TS_HEADER, b"1795812754000"),
    ]
    back = origin_of_deferred(as_received(headers))
    assert (back.topic, back.partition, back.offset, back.key, back.timestamp_ms) == (
        "events",
        3,
        42,
        b"cust-7",
        1_795_812_754_000,
    )
    assert back.ref == original.ref  # the event keeps its fallback id
    assert ("trace", b"abc") in back.headers


def test_deferred_headers_replace_stale_origin_headers() -> None:
    # Origin headers already on the message are replaced by the ones for this message, not duplicated.
    original = Origin(
        "events", 1, 7, headers=((ORIGIN_HEADER, b"old:0:0"), (ORIGIN_TS_HEADER, b"1")), timestamp_ms=1_795_812_754_000
    )
    headers = deferred_headers(original)
    assert [h for h in headers if h[0] == ORIGIN_HEADER] == [(ORIGIN_HEADER, b"events:1:7")]
    assert [h for h in headers if h[0] == ORIGIN_TS_HEADER] == [(ORIGIN_TS_HEADER, b"1795812754000")]


def test_topic_names_with_colons_round_trip() -> None:
    original = Origin("tenant:a:events", 11, 123456789, timestamp_ms=1_795_812_754_000)
    back = origin_of_deferred(as_received(deferred_headers(original)))
    assert (back.topic, back.partition, back.offset) == ("tenant:a:events", 11, 123456789)


def test_original_without_kafka_timestamp() -> None:
    original = Origin("events", 0, 1)
    headers = deferred_headers(original)
    assert [h[0] for h in headers] == [ORIGIN_HEADER]
    back = origin_of_deferred(as_received(headers, ts=555))
    assert back.ref == "events:0:1"
    # Without an origin timestamp header the deferred message's own timestamp is used.
    assert back.timestamp_ms == 555


@pytest.mark.parametrize(
    "headers",
    [[], [("other", b"x")], [(ORIGIN_HEADER, b"garbage")], [(ORIGIN_HEADER, b"t:p:o")], [(ORIGIN_HEADER, b"\xff")]],
)
def test_origin_of_deferred_without_a_usable_header_is_its_own_origin(headers: list[tuple[str, bytes]]) -> None:
    received = as_received(headers)
    assert origin_of_deferred(received) is received


def test_deferred_origin_round_trip_is_exact() -> None:
    original = Origin(
        "events", 3, 42, key=b"cust-7", headers=(("trace", b"abc"), ("flag", None)), timestamp_ms=1_795_812_754_000
    )
    assert origin_of_deferred(as_received(deferred_headers(original))) == original
