"""The facts of a window for its prompt: each entity once, counts over all of them, bounded."""

from __future__ import annotations

from pipeline.analytics.summarizer import PROMPT_QUESTION, summary_prompt
from pipeline.facts.prompt import MAX_COUNTED_FIELDS, MAX_COUNTED_VALUES, distinct_entities, facts_lines

BUSINESS, FREE = {"plan": "Business", "region": "EU", "seats": 10}, {"plan": "Free", "region": "EU", "seats": 1}


def test_each_entity_once_the_most_frequent_first_with_its_latest_facts() -> None:
    joined = [("c1", FREE), None, ("c2", BUSINESS), ("c2", BUSINESS), ("c1", BUSINESS), ("c3", FREE), ("c2", FREE)]
    assert distinct_entities(joined) == [("c2", FREE), ("c1", BUSINESS), ("c3", FREE)]


def test_entity_lines_then_counts_of_the_fields_that_group() -> None:
    joined = [("c1", BUSINESS), ("c2", BUSINESS), ("c3", FREE), ("c4", BUSINESS), ("c5", FREE)]
    lines = facts_lines(joined, max_entities=2, max_chars=30)
    assert lines[:2] == ["c1: plan=Business, region=E...", "c2: plan=Business, region=E..."]
    assert lines[2] == (
        "5 of the 5 customers have region EU; 3 of the 5 customers have plan Business; "
        "2 of the 5 customers have plan Free; 3 of the 5 customers have seats 10; 2 of the 5 customers have seats 1."
    )
    assert facts_lines(joined, 0, 30, noun="accounts")[0].startswith("5 of the 5 accounts have region EU")
    assert facts_lines([None, None], 5, 100) == []


def test_a_field_with_a_different_value_for_each_entity_is_not_counted() -> None:
    lines = facts_lines([("c1", BUSINESS), ("c2", FREE)], 2, 100)
    assert lines[2] == "2 of the 2 customers have region EU."  # plan and seats: one each, nothing grouped


def test_the_counts_line_is_bounded_whatever_the_facts_hold() -> None:
    many = {f"f{k}": f"v{k % 7}" for k in range(50)}
    joined = [(f"c{i}", {**many, "kind": f"k{i % 20}"}) for i in range(200)]
    (counts,) = facts_lines(joined, 0, 100)
    assert counts.count(" have ") <= MAX_COUNTED_FIELDS * MAX_COUNTED_VALUES


def test_the_facts_come_after_the_messages_and_before_the_question() -> None:
    assert summary_prompt(["a"]) == f"Messages:\n- a\n\n{PROMPT_QUESTION}"
    with_facts = summary_prompt(["a"], facts=["2 of the 2 customers have plan Free."])
    assert with_facts == (
        f"Messages:\n- a\n\nFacts about the customers:\n- 2 of the 2 customers have plan Free.\n\n{PROMPT_QUESTION}"
    )
