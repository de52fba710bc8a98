"""A facts file (`slmstream facts load FILE.jsonl`) checked whole, into the records of the reference topic (pure).

One JSON object per line: `{"id": "cust-17", "facts": {"plan": "Business", "region": "EU"}}`. `id` is the
entity id (the record key: what events name in `facts.join_field`), a non-empty string or an integer; `facts`
is a JSON object (the record value), or null to delete the entity (a tombstone). Blank lines are skipped.
Every line is checked before anything is sent: one bad line and the file is refused, each problem named by its
line number, so a file is never half-published by a mistake in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

MAX_PROBLEMS_SHOWN = 20


@dataclass(frozen=True, slots=True)
class FactRecord:
    line: int  # 1-based, in the file
    key: bytes
    value: bytes | None  # None: tombstone


class FactsFileError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(f"{len(problems)} bad line(s), nothing sent:\n  " + "\n  ".join(shown) + more)


def parse_facts_lines(lines: list[bytes], max_value_bytes: int, source: str = "FILE") -> list[FactRecord]:
    """The records of a facts file, in file order; FactsFileError naming every bad line."""
    out: list[FactRecord] = []
    problems: list[str] = []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            out.append(_record(n, raw, max_value_bytes))
        except ValueError as exc:
            problems.append(f"{source}:{n}: {exc}")
    if problems:
        raise FactsFileError(problems)
    return out


def _record(n: int, raw: bytes, max_value_bytes: int) -> FactRecord:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f'not a JSON object: expected {{"id": ..., "facts": {{...}}}}, got {type(doc).__name__}')
    extra = sorted(set(doc) - {"id", "facts"})
    if extra:
        raise ValueError(f"unknown field(s) {', '.join(extra)}: a line has only `id` and `facts`")
    ident = doc.get("id")
    if isinstance(ident, bool) or not isinstance(ident, str | int) or ident == "":
        raise ValueError("`id` must be a non-empty string or an integer (the entity the events name)")
    if "facts" not in doc:
        raise ValueError("no `facts`: give a JSON object, or null to delete the entity")
    facts = doc["facts"]
    if facts is None:
        return FactRecord(n, str(ident).encode(), None)
    if not isinstance(facts, dict):
        raise ValueError(f"`facts` must be a JSON object (or null to delete), got {type(facts).__name__}")
    value = orjson.dumps(facts)
    if len(value) > max_value_bytes:
        raise ValueError(f"`facts` is {len(value)} bytes; facts.max_value_bytes is {max_value_bytes}")
    return FactRecord(n, str(ident).encode(), value)
