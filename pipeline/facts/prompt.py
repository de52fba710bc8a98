"""The facts of a window's entities as a few prompt lines, bounded (pure).

A window's events may name many entities, each many times. The prompt gets each entity once (the most
frequent first, `max_entities` at most, each line at most `max_chars`), then one line of counts over every
entity of the window: "Of the 5 with facts: plan Business 3, Free 2; region EU 4, US 1". The counts are
what lets a small model say "3 of the 5 customers are on the Business plan" from data: it copies numbers
well and adds them up badly. Only scalar facts are counted, at most MAX_COUNTED_FIELDS fields and
MAX_COUNTED_VALUES values each, so the prompt stays bounded whatever the facts hold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

MAX_COUNTED_FIELDS = 4
MAX_COUNTED_VALUES = 3

Joined = tuple[str, dict[str, Any]]  # (entity, facts) of one event


def distinct_entities(joined: Iterable[Joined | None]) -> list[Joined]:
    """Each entity once, the most frequent first (ties: first seen first), with its latest facts."""
    counts: Counter[str] = Counter()
    latest: dict[str, dict[str, Any]] = {}
    for j in joined:
        if j is None:
            continue
        counts[j[0]] += 1
        latest[j[0]] = j[1]
    order = sorted(latest, key=lambda e: -counts[e])  # sorted() is stable: first seen first among ties
    return [(e, latest[e]) for e in order]


def facts_lines(joined: Iterable[Joined | None], max_entities: int, max_chars: int) -> list[str]:
    """The prompt's facts: one line per entity (bounded), then the counts line; [] when none matched."""
    entities = distinct_entities(joined)
    if not entities or max_entities == 0:
        return []
    lines = [_clip(f"{e}: {_render(values)}", max_chars) for e, values in entities[:max_entities]]
    counts = counts_line(entities)
    if counts:
        lines.append(counts)
    return lines


def counts_line(entities: list[Joined]) -> str:
    """ "Of the N with facts: field value n, value m; ..." over scalar facts (the commonest values first)."""
    by_field: dict[str, Counter[str]] = {}
    for _, values in entities:
        for k, v in values.items():
            if isinstance(v, str | int | float | bool) and str(v):
                by_field.setdefault(str(k), Counter())[str(v)] += 1
    # The fields that tell entities apart most usefully: those most entities have, fewest distinct values.
    fields = sorted(by_field, key=lambda f: (-sum(by_field[f].values()), len(by_field[f]), f))[:MAX_COUNTED_FIELDS]
    parts = []
    for f in fields:
        top = sorted(by_field[f].items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_COUNTED_VALUES]
        parts.append(f"{f} " + ", ".join(f"{v} {n}" for v, n in top))
    return f"Of the {len(entities)} with facts: " + "; ".join(parts) if parts else ""


def _render(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_scalar(v)}" for k, v in values.items())


def _scalar(v: Any) -> str:
    if isinstance(v, dict | list):
        return "..." if v else "-"
    return str(v)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
