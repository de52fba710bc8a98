"""Grounding, measured: the generator's summaries of a fixture of windows with and without the facts in the prompt.

    python -m bench.grounding [--windows tests/fixtures/grounding/windows.jsonl] [--out .artifacts/grounding.json]

Each window of the fixture is a few customer messages with customer ids; the facts file (the format of
`slmstream facts load`) holds each customer's plan, region, seats and product. Both prompts are built as the
worker builds them (pipeline/analytics/summarizer.py, pipeline/facts/prompt.py); each summary's names, numbers
and product-like terms are checked against the window's messages and its customers' facts
(pipeline/analytics/grounding.py) — the same sources for both, so the counts compare.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pipeline.analytics.extractive import sample_evenly
from pipeline.analytics.grounding import facts_words, ungrounded_terms
from pipeline.analytics.summarizer import PROMPT_QUESTION, prompt_texts, summary_prompt
from pipeline.facts.load import parse_facts_lines
from pipeline.facts.prompt import facts_lines

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "grounding"


def load_fixture(folder: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    windows = [json.loads(line) for line in (folder / "windows.jsonl").read_text().splitlines() if line.strip()]
    records = parse_facts_lines((folder / "facts.jsonl").read_bytes().splitlines(), 1 << 20)
    facts = {r.key.decode(): json.loads(r.value) for r in records if r.value is not None}
    return windows, facts


WHO = "What is the common problem, and which customers have it? Answer in one sentence."
# prompt → (entity lines it carries, None: no facts at all; its question)
CONDITIONS: dict[str, tuple[int | None, str]] = {
    "without_facts": (None, PROMPT_QUESTION),
    "with_fact_counts": (0, PROMPT_QUESTION),  # the worker's default: facts.prompt_entities 0, only the counts
    "with_fact_counts_asking_who": (0, WHO),
}


def prompts_and_sources(
    window: dict[str, Any], facts: dict[str, dict[str, Any]], prompt_events: int = 10
) -> tuple[dict[str, str], list[str]]:
    """(prompt per condition, grounding sources) of one fixture window."""
    texts = [e["text"] for e in window["events"]]
    joined = [
        (e["customer_id"], facts[e["customer_id"]]) if e["customer_id"] in facts else None for e in window["events"]
    ]
    shown = prompt_texts(texts, prompt_events, sample_evenly)
    sources = texts + facts_lines(joined, len(joined), 1000)
    for j in joined:
        if j is not None:
            sources.append(j[0])
            sources.extend(facts_words(j[1]))
    prompts = {
        cond: summary_prompt(shown, question, facts_lines(joined, n, 160) if n is not None else ())
        for cond, (n, question) in CONDITIONS.items()
    }
    return prompts, sources


def main() -> None:
    from pipeline.model.onnx_generator import load_generator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixture", type=Path, default=FIXTURE)
    ap.add_argument("--generator", default="smollm2-135m-int8")
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/models"))
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path(".artifacts/grounding.json"))
    args = ap.parse_args()

    windows, facts = load_fixture(args.fixture)
    gen = load_generator(args.cache_dir, args.generator, threads=1, max_batch=4)
    rows = []
    t0 = time.perf_counter()
    for w in windows:
        prompts, sources = prompts_and_sources(w, facts)
        summaries, _ = gen.generate(list(prompts.values()), args.max_new_tokens)
        row: dict[str, Any] = {"window": w["window"]}
        for cond, text in zip(prompts, summaries, strict=True):
            row[cond] = {"summary": text, "ungrounded": ungrounded_terms(text, sources)}
        rows.append(row)
    totals = {
        cond: {
            "summaries": len(rows),
            "with_ungrounded_terms": sum(1 for r in rows if r[cond]["ungrounded"]),
            "ungrounded_terms": sum(len(r[cond]["ungrounded"]) for r in rows),
        }
        for cond in CONDITIONS
    }
    report = {
        "generator": args.generator,
        "seconds": round(time.perf_counter() - t0, 1),
        "totals": totals,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print("| prompt | summaries | with an ungrounded term | ungrounded terms |")
    print("|---|---|---|---|")
    for cond, t in totals.items():
        print(
            f"| {cond.replace('_', ' ')} | {t['summaries']} | {t['with_ungrounded_terms']} | {t['ungrounded_terms']} |"
        )
    for r in rows:
        for cond in CONDITIONS:
            print(f"{r['window']:<15} {cond:<27} {r[cond]['ungrounded']!s:<30} {r[cond]['summary']}")


if __name__ == "__main__":
    main()
