"""The join: each event's join field → its entity's facts, hits and misses counted per batch."""

from __future__ import annotations

import pytest

from pipeline.facts.join import FactsJoin, join_value
from pipeline.facts.table import FactsTable
from schemas import Event, Origin

ORIGIN = Origin("events", 0, 0)


def event(ident: str = "e1", **fields: object) -> Event:
    return Event(id=ident, text="t", ts_ms=0, fields={"text": "t", **fields}, origin=ORIGIN)


@pytest.mark.parametrize(
    ("spec", "fields", "want"),
    [
        ("key", {"key": "c1"}, "c1"),
        ("key", {"key": ""}, None),
        ("key", {}, None),
        ("source", {"source": "web"}, "web"),
        ("attrs.customer_id", {"attrs": {"customer_id": 17}}, "17"),
        ("attrs.customer.id", {"attrs": {"customer": {"id": "c9"}}}, "c9"),
        ("attrs.customer.id", {"attrs": {"customer": "c9"}}, None),
        ("attrs.flag", {"attrs": {"flag": True}}, None),
        ("attrs.obj", {"attrs": {"obj": {"a": 1}}}, None),
        ("id", {}, "e1"),
    ],
)
def test_join_value(spec: str, fields: dict[str, object], want: str | None) -> None:
    assert join_value(event(**fields), spec) == want


def test_a_batch_gets_each_events_facts_and_reports_hits_and_misses_once() -> None:
    table = FactsTable(10)
    table.put("c1", {"plan": "Business"})
    table.put("17", {"plan": "Free"})
    seen: list[tuple[int, int]] = []
    join = FactsJoin(table, "attrs.customer_id", lambda h, m: seen.append((h, m)))
    events = [
        event("a", attrs={"customer_id": "c1"}),
        event("b", attrs={"customer_id": "c2"}),
        event("c"),
        event("d", attrs={"customer_id": 17}),
    ]
    assert join.facts_of(events) == [
        {"entity": "c1", "values": {"plan": "Business"}},
        None,
        None,
        {"entity": "17", "values": {"plan": "Free"}},
    ]
    assert seen == [(2, 2)]
    assert (join.hits, join.misses) == (2, 2)


def test_an_update_reaches_the_next_batch() -> None:
    table = FactsTable(10)
    join = FactsJoin(table, "key")
    assert join.facts_of([event(key="c1")]) == [None]
    table.apply(b"c1", b'{"plan": "Business"}')
    assert join.facts_of([event(key="c1")]) == [{"entity": "c1", "values": {"plan": "Business"}}]
    table.apply(b"c1", None)
    assert join.facts_of([event(key="c1")]) == [None]


def test_joined_facts_go_into_the_enriched_record_as_the_schema_says() -> None:
    import orjson
    from jsonschema import Draft202012Validator

    from pipeline.output.records import Classification, ModelInfo, enriched_record, enriched_records
    from schemas import load_schema

    table = FactsTable(10)
    table.put("c1", {"plan": "Business"})
    events = [event("a", key="c1"), event("b", key="c2")]
    joined = FactsJoin(table, "key").facts_of(events)
    result = Classification("billing", 0.9, {"billing": 0.9})
    common: dict[str, object] = dict(degraded=False, model_ms=1.0)
    batch = enriched_records(
        events,
        [result, result],
        ModelInfo("m", "h"),
        "t",
        deadline_met=[True, True],
        queue_ms=[1.0, 1.0],
        total_ms=[2.0, 2.0],
        facts=joined,
        **common,  # type: ignore[arg-type]
    )
    docs = [orjson.loads(b) for b in batch]
    validator = Draft202012Validator(load_schema("enriched"))
    for doc in docs:
        validator.validate(doc)
    assert docs[0]["facts"] == {"entity": "c1", "values": {"plan": "Business"}}
    assert "facts" not in docs[1]
    one = enriched_record(
        events[0],
        result,
        ModelInfo("m", "h"),
        "t",
        deadline_met=True,
        queue_ms=1.0,
        total_ms=2.0,
        facts=joined[0],
        **common,  # type: ignore[arg-type]
    )
    assert one == batch[0]
