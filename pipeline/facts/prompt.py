"""The facts of a window's entities as a few prompt lines, bounded (pure).

A window's events may name many entities, each many times. The prompt gets each entity once (the most
frequent first, `max_entities` at most, each line at most `max_chars`), then one line of counts over every
entity of the window: "3 of the 5 customers have plan Business; 2 of the 5 customers have plan Free; ...".
The counts are what lets a small model say "3 of the 5 customers are on the Business plan" from data: it
copies numbers well and adds them up badly. Only scalar facts are counted, in fields that group entities (not
one value each), at most MAX_COUNTED_FIELDS fields and MAX_COUNTED_VALUES values each, so the prompt stays
bounded whatever the facts hold.
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


def facts_lines(
    joined: Iterable[Joined | None], max_entities: int, max_chars: int, noun: str = "customers"
) -> list[str]:
    """The prompt's facts: one line per entity (at most `max_entities`, 0: none), then the counts line; []
    when no event matched."""
    entities = distinct_entities(joined)
    if not entities:
        return []
    lines = [_clip(f"{e}: {_render(values)}", max_chars) for e, values in entities[:max_entities]]
    counts = counts_line(entities, noun)
    if counts:
        lines.append(counts)
    return lines


def counts_line(entities: list[Joined], noun: str = "customers") -> str:
    """ "4 of the 5 customers have plan Business; 1 of the 5 customers have plan Free; ..." over scalar facts
    (the commonest values first): whole statements, which a small model copies rather than recombines."""
    by_field: dict[str, Counter[str]] = {}
    for _, values in entities:
        for k, v in values.items():
            if isinstance(v, str | int | float | bool) and str(v):
                by_field.setdefault(str(k), Counter())[str(v)] += 1
    # Fields whose every value is different (ids, seat counts) group nothing. The rest: those most entities
    # have first, then those with the fewest distinct values.
    grouping = [f for f, c in by_field.items() if len(entities) == 1 or len(c) < sum(c.values())]
    fields = sorted(grouping, key=lambda f: (-sum(by_field[f].values()), len(by_field[f]), f))[:MAX_COUNTED_FIELDS]
    parts: list[str] = []
    for f in fields:
        top = sorted(by_field[f].items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_COUNTED_VALUES]
        parts.extend(f"{n} of the {len(entities)} {noun} have {f} {v}" for v, n in top)
    return "; ".join(parts) + "." if parts else ""


def _render(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_scalar(v)}" for k, v in values.items())


def _scalar(v: Any) -> str:
    if isinstance(v, dict | list):
        return "..." if v else "-"
    return str(v)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
