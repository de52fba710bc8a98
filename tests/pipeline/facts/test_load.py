"""A facts file is checked whole: a bad line names itself and nothing is sent."""

from __future__ import annotations

import pytest

from pipeline.facts.load import FactRecord, FactsFileError, parse_facts_lines


def test_good_lines_become_keyed_records_and_null_facts_a_tombstone() -> None:
    lines = [
        b'{"id": "c1", "facts": {"plan": "Business", "seats": 12}}',
        b"",
        b'{"id": 17, "facts": {}}',
        b'{"id": "c2", "facts": null}',
    ]
    assert parse_facts_lines(lines, 4096) == [
        FactRecord(1, b"c1", b'{"plan":"Business","seats":12}'),
        FactRecord(3, b"17", b"{}"),
        FactRecord(4, b"c2", None),
    ]


def test_every_bad_line_is_named_by_its_number() -> None:
    lines = [
        b'{"id": "c1", "facts": {"plan": "Business"}}',
        b"{not json",
        b"[1, 2]",
        b'{"id": "", "facts": {}}',
        b'{"id": true, "facts": {}}',
        b'{"id": "c3"}',
        b'{"id": "c4", "facts": "Business"}',
        b'{"id": "c5", "facts": {}, "plan": "x"}',
        b'{"id": "c6", "facts": {"note": "' + b"x" * 100 + b'"}}',
    ]
    with pytest.raises(FactsFileError) as caught:
        parse_facts_lines(lines, 64, "f.jsonl")
    problems = caught.value.problems
    assert [p.split(":")[1] for p in problems] == ["2", "3", "4", "5", "6", "7", "8", "9"]
    assert all(p.startswith("f.jsonl:") for p in problems)
    text = str(caught.value)
    assert "8 bad line(s), nothing sent" in text
    assert "unknown field(s) plan" in text and "facts.max_value_bytes is 64" in text
