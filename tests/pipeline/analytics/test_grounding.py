"""The grounding check: names and numbers of a generated text that its sources do not hold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.analytics.grounding import candidate_terms, facts_words, source_words, ungrounded_terms

SOURCES = [
    "My invoice for March shows two charges of $49.99.",
    "I was billed twice on my Visa card, 1,200 dollars in total",
    *facts_words({"plan": "Business", "region": "EU", "seats": 12, "devices": [{"model": "X200"}]}),
    "4 of the 5 customers have plan Business.",
]


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("Customers on the Business plan report double charges of 49.99 on Visa cards.", []),
        ("4 of the 5 customers are on the Business plan.", []),
        ("The X200 users in the EU were charged 1200 dollars.", []),  # 1,200 and 1200 are one number
        ("The Premium plan costs 99 dollars since 2023.", ["Premium", "99", "2023"]),
        ("Many users of the iPhone app say the v2 update fails.", ["iPhone", "v2"]),
        ("Three customers are on the Business plan, 2 on Free.", ["2", "Free"]),
        ("Customers in March were charged twice.", []),
        ("Acme customers were charged twice.", ["Acme"]),  # a sentence's first word, and not a common one
        ("They say so. Zendesk is down.", ["Zendesk"]),
    ],
)
def test_ungrounded_terms(text: str, terms: list[str]) -> None:
    assert ungrounded_terms(text, SOURCES) == terms


def test_a_term_is_named_once_in_order_of_appearance() -> None:
    assert candidate_terms("Premium and Gold; Premium again, 7 and 7.") == ["Premium", "Gold", "7"]


def test_plurals_and_possessives_match_their_word() -> None:
    assert ungrounded_terms("Visa's outage hit Businesses.", ["visa", "business"]) == []


def test_facts_words_reach_nested_keys_and_values() -> None:
    assert sorted(facts_words({"a": {"b": [1, "x"]}, "c": None})) == ["1", "a", "b", "c", "x"]


@given(st.lists(st.sampled_from(sorted(source_words(SOURCES))), min_size=1, max_size=12), st.randoms())
def test_a_text_made_of_source_words_is_grounded_however_capitalised(words: list[str], rnd) -> None:
    text = " ".join(w.capitalize() if rnd.random() < 0.5 else w.upper() if rnd.random() < 0.3 else w for w in words)
    assert ungrounded_terms(text + ".", SOURCES) == []
