"""The facts table: store, tombstone, rejects, and the bound (update order)."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from pipeline.facts.table import REJECT_REASONS, FactsTable


def fact(**values: object) -> bytes:
    return orjson.dumps(values)


def test_a_fact_is_stored_and_replaced_by_a_later_one() -> None:
    t = FactsTable(10)
    assert t.apply(b"c1", fact(plan="Free")).outcome == "stored"
    assert t.apply(b"c1", fact(plan="Business")).outcome == "stored"
    assert t.get("c1") == {"plan": "Business"}
    assert len(t) == 1


def test_a_tombstone_deletes_the_entity() -> None:
    t = FactsTable(10)
    t.apply(b"c1", fact(plan="Free"))
    applied = t.apply(b"c1", None)
    assert (applied.outcome, applied.entity) == ("deleted", "c1")
    assert t.get("c1") is None and "c1" not in t
    assert t.apply(b"never-seen", None).outcome == "deleted"  # deleting what is not there is fine


def test_bad_values_are_rejected_by_reason_and_remove_the_old_fact() -> None:
    t = FactsTable(10, max_value_bytes=64)
    t.apply(b"c1", fact(plan="Free"))
    cases = {
        b"[1, 2]": "not_object",
        b'"Business"': "not_object",
        b"{not json": "not_json",
        fact(note="x" * 100): "too_large",
    }
    for value, reason in cases.items():
        t.apply(b"c1", fact(plan="Free"))
        applied = t.apply(b"c1", value)
        assert (applied.outcome, applied.reason) == ("rejected", reason)
        assert t.get("c1") is None  # the topic's latest word on c1 is not a fact
    assert t.apply(None, fact(a=1)).reason == "no_key"
    assert t.apply(b"", fact(a=1)).reason == "no_key"
    assert t.apply(b"\xff\xfe", fact(a=1)).reason == "not_utf8"
    assert set(t.rejected) <= set(REJECT_REASONS)
    assert t.rejected["not_object"] == 2 and t.rejected["no_key"] == 2


def test_past_the_bound_the_least_recently_updated_entity_goes() -> None:
    t = FactsTable(3)
    for k in ("a", "b", "c"):
        t.apply(k.encode(), fact(k=k))
    t.apply(b"a", fact(k="a2"))  # updated: now the newest
    t.get("b")  # a lookup does not change the order (every worker keeps the same entities)
    t.apply(b"d", fact(k="d"))
    assert sorted(k for k in "abcd" if k in t) == ["a", "c", "d"]
    assert t.evictions == 1 and len(t) == 3


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.one_of(st.none(), st.integers(0, 9))), max_size=60))
def test_the_table_is_the_last_word_per_key_within_its_bound(ops: list[tuple[str, int | None]]) -> None:
    t = FactsTable(4)
    last: dict[str, int | None] = {}
    for key, v in ops:
        t.apply(key.encode(), None if v is None else fact(v=v))
        last.pop(key, None)
        last[key] = v
    assert len(t) <= 4
    if ops and ops[-1][1] is not None:  # the latest fact is always held
        assert t.get(ops[-1][0]) == {"v": ops[-1][1]}
    if len(last) <= 4:  # nothing had to go
        assert all(t.get(k) == {"v": v} for k, v in last.items() if v is not None)
    for k, v in last.items():  # what is held is the last word
        if v is None:
            assert k not in t
        elif k in t:
            assert t.get(k) == {"v": v}
