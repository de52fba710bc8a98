"""WindowAnalytics with facts in the enriched records: the prompt carries them, and a generated summary that
names what neither the messages nor the facts hold is replaced by the extractive one, saying why."""

from __future__ import annotations

import jsonschema
import orjson

from pipeline.analytics.runner import WindowAnalytics, parse_enriched
from pipeline.model.onnx_generator import GenerationStats
from schemas import load_schema
from tests.pipeline.analytics.test_runner import T0, Clock, FakeGenerator, FakeSink, analytics, close_and_drain, run
from tests.pipeline.analytics.test_runner import settings as runner_settings

PLANS = {"c1": "Business", "c2": "Business", "c3": "Free"}


def enriched_with_facts(i: int, key: str, customer: str) -> bytes:
    return orjson.dumps(
        {
            "id": f"e{i}",
            "text": f"I was charged twice for order {i}",
            "ts": int((T0 + 1) * 1000),
            "key": key,
            "analysis": {"label": "billing", "latency_ms": {"total": 40.0}},
            "facts": {"entity": customer, "values": {"plan": PLANS[customer]}},
        }
    )


class ScriptedGenerator(FakeGenerator):
    """Answers each prompt with the text the test gives for the window whose messages it holds."""

    def __init__(self, answers: dict[str, str]) -> None:
        super().__init__()
        self.answers = answers
        self.prompts: list[str] = []

    async def generate(self, prompts, max_new_tokens):
        self.prompts.extend(prompts)
        stats = GenerationStats(prompts=len(prompts), prompt_tokens=100, new_tokens=10, prefill_s=0.01, decode_s=0.01)
        return [next(a for marker, a in self.answers.items() if marker in p) for p in prompts], stats


def test_enriched_facts_reach_the_window_event() -> None:
    _, event = parse_enriched(enriched_with_facts(1, "k", "c1"), "key")
    assert event.facts == ("c1", {"plan": "Business"})
    doc = orjson.loads(enriched_with_facts(2, "k", "c1"))
    for broken in ({"entity": "", "values": {}}, {"entity": "c1", "values": [1]}, "c1", None):
        doc["facts"] = broken
        assert parse_enriched(doc, "key")[1].facts is None


def test_the_prompt_has_the_facts_and_an_ungrounded_summary_goes_extractive(monkeypatch) -> None:
    s = runner_settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false")

    async def main() -> tuple[WindowAnalytics, FakeSink, ScriptedGenerator]:
        clock, sink = Clock(), FakeSink()
        # k-good's answer uses only what the facts say; k-bad's names a plan and a price nobody mentioned.
        gen = ScriptedGenerator(
            {
                "order 0": "2 of the 3 customers on the Business plan were charged twice.",
                "order 10": "Customers on the Premium plan were charged 99 dollars twice.",
            }
        )
        a = analytics(s, sink, gen, clock)
        for i, c in enumerate(PLANS):
            await a.submit(enriched_with_facts(i, "k-good", c), lambda: None)
            await a.submit(enriched_with_facts(10 + i, "k-bad", c), lambda: None)
        await close_and_drain(a, clock, T0 + 11, sink)
        return a, sink, gen

    a, sink, gen = run(main())
    assert len(gen.prompts) == 2
    for prompt in gen.prompts:
        assert "2 of the 3 customers have plan Business" in prompt
        assert "Facts about the customers:" in prompt
    by_key = {r["key"]: r for r in sink.of(s.topics.summaries)}
    schema = load_schema("summary")
    for r in by_key.values():
        jsonschema.validate(r, schema)
    good, bad = by_key["k-good"], by_key["k-bad"]
    assert good["method"] == "abstractive" and "reason" not in good
    assert good["summary"].startswith("2 of the 3 customers on the Business plan")
    assert bad["method"] == "extractive" and bad["reason"] == "ungrounded: Premium, 99"
    assert "charged twice for order" in bad["summary"]  # the messages themselves
    assert a.emitted["abstractive"] == 1 and a.emitted["extractive"] == 1


def test_the_check_can_be_switched_off(monkeypatch) -> None:
    s = runner_settings(monkeypatch, SLMSTREAM_ALERTS__ENABLED="false", SLMSTREAM_SUMMARIES__GROUNDING_CHECK="false")

    async def main() -> FakeSink:
        clock, sink = Clock(), FakeSink()
        a = analytics(s, sink, ScriptedGenerator({"order": "The Premium plan."}), clock)
        for i, c in enumerate(PLANS):
            await a.submit(enriched_with_facts(i, "k", c), lambda: None)
        await close_and_drain(a, clock, T0 + 11, sink)
        return sink

    (summary,) = run(main()).of(s.topics.summaries)
    assert summary["method"] == "abstractive" and summary["summary"] == "The Premium plan."


def test_an_alerts_prompt_has_the_facts_of_its_labels_sampled_events(monkeypatch) -> None:
    s = runner_settings(monkeypatch, SLMSTREAM_SUMMARIES__ENABLED="false")

    async def main() -> tuple[FakeSink, ScriptedGenerator]:
        clock, sink = Clock(), FakeSink()
        gen = ScriptedGenerator({"account_access": "Customers on the Business plan cannot log in."})
        a = analytics(s, sink, gen, clock)
        i = 0
        for w in range(4):  # 3 quiet windows, then a spike of 'account_access' from Business customers
            start = T0 + 10 * w
            clock.advance_to(start)
            labels = ["billing", "account_access"] if w < 3 else ["billing"] + ["account_access"] * 12
            for label in labels:
                i += 1
                doc = orjson.loads(enriched_with_facts(i, f"k{i % 2}", "c1" if i % 3 else "c2"))
                doc["ts"], doc["analysis"]["label"] = int((start + 1) * 1000), label
                await a.submit(orjson.dumps(doc), lambda: None)
            await close_and_drain(a, clock, start + 11, sink)
        return sink, gen

    sink, gen = run(main())
    (alert,) = sink.of(s.topics.alerts)
    assert alert["label"] == "account_access" and alert["method"] == "abstractive"
    (prompt,) = gen.prompts
    assert "Facts about the customers:\n- 2 of the 2 customers have plan Business." in prompt
