"""SummaryPlanner decisions with a fake clock and a fixed time model."""

from __future__ import annotations

import pytest

from pipeline.analytics.summarizer import GenerationTime, Job, SummaryPlanner, prompt_texts, summary_prompt

NOW = 1000.0


def planner(per_prompt: float = 0.001, per_new: float = 0.01, **kw) -> SummaryPlanner:
    t = GenerationTime(per_prompt_token_s=per_prompt, per_new_token_s=per_new)
    opts = {"min_events_abstractive": 3, "max_new_tokens": 40, "max_batch": 4} | kw
    return SummaryPlanner(t, **opts)


def job(name: str, events: int = 10, tokens: int = 300, deadline: float = NOW + 10) -> Job:
    return Job(f"prompt {name}", tokens, events, deadline, name)


def test_small_windows_are_extractive() -> None:
    plan = planner().plan([job("a", events=2), job("b", events=3)], NOW, 0)
    assert [j.payload for j in plan.extractive] == ["a"]
    assert [[j.payload for j in b] for b in plan.batches] == [["b"]]


def test_jobs_are_batched_up_to_max_batch_when_they_fit() -> None:
    # one job: 0.3 s prefill + 0.4 s decode; four: 1.2 + 1.6 = 2.8 s, well inside 10 s
    plan = planner().plan([job(str(i)) for i in range(6)], NOW, 0)
    assert [len(b) for b in plan.batches] == [4, 2]
    assert plan.extractive == []
    assert plan.finish_at == pytest.approx(NOW + 2.8 + 1.4)


def test_a_job_that_cannot_finish_before_its_deadline_is_extractive() -> None:
    p = planner()
    plan = p.plan([job("late", deadline=NOW + 0.5)], NOW, 0)  # needs 0.7 s
    assert [j.payload for j in plan.extractive] == ["late"] and plan.batches == []


def test_a_busy_generator_pushes_work_past_the_budget() -> None:
    plan = planner().plan([job("a")], NOW, busy_until=NOW + 9.5)
    assert [j.payload for j in plan.extractive] == ["a"]
    plan = planner().plan([job("a")], NOW, busy_until=NOW + 9.0)
    assert [j.payload for j in plan.batches[0]] == ["a"]


def test_earliest_deadline_first_and_a_full_batch_runs_before_the_next() -> None:
    # each job alone 0.7 s; a batch of two 1.4 s. Deadlines: a +1.5, b +1.45, c +2.0
    jobs = [job("a", deadline=NOW + 1.5), job("c", deadline=NOW + 2.0), job("b", deadline=NOW + 1.45)]
    plan = planner().plan(jobs, NOW, 0)
    assert [[j.payload for j in b] for b in plan.batches] == [["b", "a"]]  # c would make the batch late
    assert [j.payload for j in plan.extractive] == ["c"]  # after the batch (1.4 s) c needs 0.7 more: 2.1 > 2.0


def test_learnt_time_changes_the_decision() -> None:
    p = planner()
    assert p.plan([job("a", deadline=NOW + 2)], NOW, 0).batches  # prior: 0.7 s
    for _ in range(20):  # the machine turns out 10x slower
        p.time.observe(300, 3.0, 40, 4.0)
    assert p.time.per_prompt_token_s == pytest.approx(0.01, rel=0.05)
    assert p.plan([job("a", deadline=NOW + 2)], NOW, 0).batches == []


def test_disabled_planner_sends_everything_to_extractive() -> None:
    plan = planner(enabled=False).plan([job("a"), job("b")], NOW, 0)
    assert len(plan.extractive) == 2 and plan.batches == []


def test_prompt_puts_messages_first_then_the_question() -> None:
    p = summary_prompt(["Card declined", "x" * 300])
    assert p.startswith("Messages:\n- Card declined\n- ")
    assert p.endswith("What is the common problem? Answer in one sentence.")
    assert "x" * 198 not in p  # clipped


def test_prompt_texts_are_distinct_and_capped() -> None:
    texts = ["a", "A", "b", "c", "d"]
    assert prompt_texts(texts, 3, lambda n, k: list(range(min(n, k)))) == ["a", "b", "c"]


# ---- per-label structure -----------------------------------------------------------------------------------
def test_dominant_labels_are_those_with_a_fair_share_most_first() -> None:
    from pipeline.analytics.summarizer import dominant_labels

    assert dominant_labels({"billing": 6, "delivery": 4, "app": 1}) == [("billing", 6), ("delivery", 4)]
    assert dominant_labels({"delivery": 3, "billing": 3}) == [("billing", 3), ("delivery", 3)]  # ties by name
    assert dominant_labels({"billing": 9, "delivery": 1}) == [("billing", 9)]  # one topic: the plain summary
    assert dominant_labels({"unknown": 5, "billing": 5}) == [("billing", 5)]  # `unknown` is not a topic
    assert dominant_labels({"a": 1, "b": 1}) == []  # one event each is not a group
    four = {"a": 5, "b": 5, "c": 5, "d": 5}
    assert [n for n, _ in dominant_labels(four)] == ["a", "b", "c"]  # at most three groups
    assert dominant_labels({}) == []


def test_a_window_over_several_labels_has_a_reason_to_be_summarized_per_label() -> None:
    from pipeline.analytics.summarizer import several_labels

    labels = ["billing", "delivery", "billing", "delivery", "billing", "app"]
    assert several_labels(labels) == "several labels: billing, delivery"  # `app` (1 of 6) is not dominant
    assert several_labels(["billing"] * 9 + ["delivery"]) == ""
    assert several_labels([]) == ""


def test_a_job_with_a_reason_goes_extractive_whatever_the_budget() -> None:
    p = planner()
    mixed = Job("", 0, 10, NOW + 100, "mixed", reason="several labels: billing, delivery")
    plan = p.plan([mixed, job("plain")], NOW, NOW)
    assert [j.payload for j in plan.extractive] == ["mixed"]
    assert [[j.payload for j in b] for b in plan.batches] == [["plain"]]


def test_unread_language_is_the_most_common_and_only_when_the_generator_does_not_read_it() -> None:
    from pipeline.analytics.summarizer import unread_language

    english = frozenset({"en"})
    assert unread_language(["de", "de", "en"], english) == ("de", "generator does not read de")
    assert unread_language(["en", "de", "en"], english) == ("en", "")
    assert unread_language(["zh", "zh"], None) == ("zh", "")  # a generator that reads any language
    assert unread_language(["und", "und", "de"], english) == ("und", "")  # undetermined: left to the generator
    assert unread_language([], english) == ("", "")


def test_a_job_with_a_reason_is_planned_extractive_whatever_the_budget() -> None:
    planner = SummaryPlanner(GenerationTime(), min_events_abstractive=1, max_new_tokens=10, max_batch=4)
    ok = Job("p", 10, 50, deadline=1e9)
    unread = Job("", 0, 50, deadline=1e9, lang="de", reason="generator does not read de")
    plan = planner.plan([ok, unread], now=0.0, busy_until=0.0)
    assert plan.batches == [[ok]]
    assert plan.extractive == [unread]
