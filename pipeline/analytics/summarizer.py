"""Which closed windows get an abstractive summary from the generator, and in which batches.

A window (or an alert's explanation) is a `Job` with a deadline: its close time + `budget_s`. The planner sends
it to the generator only when it has at least `min_events_abstractive` events and the learnt generation time
says the batch it joins finishes before the deadline of every job in that batch, counting the work the
generator already has; everything else gets an extractive summary. Jobs are taken earliest deadline first and
packed into batches of up to `max_batch` prompts (the generator decodes a batch in step). A job whose texts are
in a language the generator does not read (`unread_language`) is extractive too, and its record says why.

A window whose events spread over several labels (`dominant_labels`: two or more labels with at least a fifth
of its events each) is summarized per label, extractively: the most central texts of each label, named
(extractive.py), never one "common problem" over unrelated messages. Such a job carries a `reason` and goes
extractive whatever the budget: measured with SmolLM2-135M, a prompt that groups the messages by label and
asks one sentence per label still gets one sentence about one of them, passed off as the common problem.

`GenerationTime` learns seconds per prompt token (prefill) and per new token (decode) from the generator's own
statistics, as decayed ratios, so the estimate follows the machine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.types import LANG_UNDETERMINED

PROMPT_QUESTION = "What is the common problem? Answer in one sentence."
PROMPT_MAX_CHARS = 200  # per message in a prompt
# A window spread over several labels gets a summary per dominant label (`dominant_labels`).
MIN_LABEL_SHARE = 0.2
MAX_LABEL_GROUPS = 3
UNKNOWN_LABEL = "unknown"  # the classifier's label below its confidence floor: not a topic


class GenerationTime:
    def __init__(self, per_prompt_token_s: float = 0.003, per_new_token_s: float = 0.025, decay: float = 0.7) -> None:
        # Priors: SmolLM2-135M int8 on one core of this class of machine (models.md), worth about one batch.
        self._decay = decay
        self._prompt_tokens, self._prefill_s = 300.0, 300.0 * per_prompt_token_s
        self._new_tokens, self._decode_s = 40.0, 40.0 * per_new_token_s
        self.observed = 0

    def observe(self, prompt_tokens: int, prefill_s: float, new_tokens: int, decode_s: float) -> None:
        d = self._decay
        if prompt_tokens > 0 and prefill_s >= 0:
            self._prompt_tokens = self._prompt_tokens * d + prompt_tokens
            self._prefill_s = self._prefill_s * d + prefill_s
        if new_tokens > 0 and decode_s >= 0:
            self._new_tokens = self._new_tokens * d + new_tokens
            self._decode_s = self._decode_s * d + decode_s
        self.observed += 1

    @property
    def per_prompt_token_s(self) -> float:
        return self._prefill_s / self._prompt_tokens

    @property
    def per_new_token_s(self) -> float:
        return self._decode_s / self._new_tokens

    def estimate(self, prompt_tokens: int, new_tokens: int) -> float:
        return prompt_tokens * self.per_prompt_token_s + new_tokens * self.per_new_token_s


@dataclass(slots=True)
class Job:
    """One text to write: a window's summary or an alert's explanation."""

    prompt: str
    prompt_tokens: int
    events: int
    deadline: float  # wall-clock seconds: close + budget
    payload: Any = None  # what the runner needs back (the window, the alert)
    lang: str = ""  # the language of its texts (the most common among the prompt's), "" when not identified
    reason: str = ""  # set: extractive whatever the budget, and the record says why


@dataclass(slots=True)
class Plan:
    batches: list[list[Job]] = field(default_factory=list)  # to the generator, in this order
    extractive: list[Job] = field(default_factory=list)
    finish_at: float = 0.0  # when the generator is expected to be done with these batches


class SummaryPlanner:
    def __init__(
        self,
        time_model: GenerationTime,
        *,
        min_events_abstractive: int,
        max_new_tokens: int,
        max_batch: int,
        enabled: bool = True,
    ) -> None:
        self.time = time_model
        self.min_events = min_events_abstractive
        self.max_new_tokens = max_new_tokens
        self.max_batch = max(1, max_batch)
        self.enabled = enabled  # False: no generator, every job is extractive

    def batch_time(self, jobs: Sequence[Job]) -> float:
        """Estimated seconds for one generator call on `jobs` (every row may run to the token cap)."""
        return self.time.estimate(sum(j.prompt_tokens for j in jobs), len(jobs) * self.max_new_tokens)

    def plan(self, jobs: Sequence[Job], now: float, busy_until: float) -> Plan:
        """Split `jobs` into generator batches and extractive ones; `busy_until`: when the generator is free."""
        plan = Plan(finish_at=max(now, busy_until))
        if not self.enabled:
            plan.extractive = list(jobs)
            return plan
        start = max(now, busy_until)
        batch: list[Job] = []
        for job in sorted(jobs, key=lambda j: (j.deadline, -j.events)):
            if job.events < self.min_events or job.reason:
                plan.extractive.append(job)
                continue
            if batch and len(batch) < self.max_batch and self._fits(batch + [job], start):
                batch.append(job)
                continue
            if batch:  # the batch is full or cannot take this job: it runs first, this job starts the next
                start += self.batch_time(batch)
                plan.batches.append(batch)
                batch = []
            if self._fits([job], start):
                batch = [job]
            else:
                plan.extractive.append(job)
        if batch:
            start += self.batch_time(batch)
            plan.batches.append(batch)
        plan.finish_at = start
        return plan

    def _fits(self, batch: list[Job], start: float) -> bool:
        return start + self.batch_time(batch) <= min(j.deadline for j in batch)


def unread_language(langs: Sequence[str], reads: frozenset[str] | None) -> tuple[str, str]:
    """(the texts' language: the most common of `langs`, "" if none; why the generator must not write about
    them, "" if it may). `reads`: the generator's languages, None for any. An undetermined language (`und`)
    is left to the generator."""
    if not langs:
        return "", ""
    lang = Counter(langs).most_common(1)[0][0]
    if reads is None or lang in reads or lang == LANG_UNDETERMINED:
        return lang, ""
    return lang, f"generator does not read {lang}"


def summary_prompt(
    texts: Sequence[str], question: str = PROMPT_QUESTION, facts: Sequence[str] = (), noun: str = "customers"
) -> str:
    """The messages first, then the facts joined to them (pipeline/facts/prompt.py, bounded there), then the
    question (what worked with SmolLM2-135M). The question stays the same with facts: asked which customers
    have the problem, SmolLM2-135M wrote about their plans whether they mattered or not (README "Facts")."""
    lines = "\n".join(f"- {_clip(t)}" for t in texts)
    known = "".join(f"- {f}\n" for f in facts)
    return f"Messages:\n{lines}\n\n" + (f"Facts about the {noun}:\n{known}\n" if facts else "") + question


def dominant_labels(counts: Mapping[str, int], *, min_share: float = MIN_LABEL_SHARE) -> list[tuple[str, int]]:
    """The labels a window is mostly about, most events first (ties by name): each with at least `min_share`
    of the events and at least 2, `unknown` never, at most `MAX_LABEL_GROUPS`. Two or more: the window's
    messages are about different things, and its summary is written per label."""
    total = sum(counts.values())
    ranked = sorted(((n, c) for n, c in counts.items() if n != UNKNOWN_LABEL), key=lambda nc: (-nc[1], nc[0]))
    return [(n, c) for n, c in ranked if c >= max(2, min_share * total)][:MAX_LABEL_GROUPS]


def several_labels(labels: Sequence[str]) -> str:
    """Why a window (its events' labels) is summarized per label, extractively: "" when it is about one."""
    groups = dominant_labels(Counter(labels))
    return "several labels: " + ", ".join(n for n, _ in groups) if len(groups) >= 2 else ""


def alert_prompt(label: str, texts: Sequence[str], facts: Sequence[str] = (), noun: str = "customers") -> str:
    return summary_prompt(
        texts,
        f"Many more '{label}' messages than usual arrived. What is the common problem? Answer in one sentence.",
        facts,
        noun,
    )


def prompt_texts(texts: Sequence[str], limit: int, sample: Callable[[int, int], list[int]]) -> list[str]:
    """Up to `limit` distinct texts spread over the window (`sample(n, limit)` picks indexes)."""
    out, seen = [], set()
    for i in sample(len(texts), limit * 2):
        norm = " ".join(texts[i].split()).lower()
        if norm not in seen:
            seen.add(norm)
            out.append(texts[i])
        if len(out) == limit:
            break
    return out


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PROMPT_MAX_CHARS else text[: PROMPT_MAX_CHARS - 3] + "..."
