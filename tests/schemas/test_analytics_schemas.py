"""The summary, stats and alert schemas: valid JSON Schema, matching the TypedDicts and the record builders."""

from __future__ import annotations

import typing

import jsonschema
import pytest

from pipeline.analytics.alerts import Spike
from pipeline.analytics.merge import MergedWindow, StatsMerger, partial_record
from pipeline.analytics.records import alert_record, rfc3339, summary_record, window_doc
from pipeline.analytics.windows import Window, WindowEvent
from schemas import load_schema
from schemas.types import AlertRecord, StatsRecord, SummaryRecord, WindowBounds


def window() -> Window:
    w = Window("cust-1", 1_800_000_000_000, 1_800_000_060_000, 0, 1_800_000_000.0, 1_800_000_065.0)
    w.events = [WindowEvent(f"e{i}", "t", "billing", "email", 1_800_000_000_000 + i, 10.0 * i) for i in range(6)]
    w.reason, w.closed_at = "time", 1_800_000_065.0
    return w


@pytest.mark.parametrize(
    ("name", "typed"), [("summary", SummaryRecord), ("stats", StatsRecord), ("alert", AlertRecord)]
)
def test_schema_is_valid_and_requires_every_typed_field(name: str, typed: type) -> None:
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["required"]) == set(typed.__required_keys__)  # type: ignore[attr-defined]
    assert set(typing.get_type_hints(typed)) <= set(schema["properties"])  # the optional ones too (lang, reason)
    assert set(schema["properties"]["window"]["required"]) == set(typing.get_type_hints(WindowBounds))


def test_built_records_validate() -> None:
    w = window()
    s = summary_record(
        w, {"billing": 6}, "x", method="extractive", model="m", latency_ms=12.0, budget_met=True, sample_ids=["e0"]
    )
    jsonschema.validate(s, load_schema("summary"))
    (merged,) = StatsMerger(1, 60.0).add(partial_record(w, 0, w.start_ms, w.end_ms), lambda: None, 0, 0.0)
    assert isinstance(merged, MergedWindow)
    jsonschema.validate(merged.record, load_schema("stats"))
    spike = Spike("billing", 6, 1.0, 0.5, 3, 6.0, 10.0, "ratio+z", ["e0", "e1"])
    jsonschema.validate(alert_record(spike, w, "why", method="abstractive", model="g"), load_schema("alert"))
    bad = dict(s, method="guess")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, load_schema("summary"))


def test_window_times_are_rfc3339_utc() -> None:
    assert rfc3339(1_800_000_000_000) == "2027-01-15T08:00:00.000Z"
    doc = window_doc(window())
    assert (doc["start"], doc["end"]) == ("2027-01-15T08:00:00.000Z", "2027-01-15T08:01:00.000Z")
