"""The facts table: entity id → JSON object, bounded, fed by the records of the reference topic (pure).

Guarantees
- Bounded: at most `max_entries` entities, each value at most `max_value_bytes` as received. Past the bound
  the entity updated least recently is dropped (and counted in `evictions`). Update order, not lookup order:
  every worker reads the same topic in the same order per partition, so workers with the same bound hold the
  same entities whatever traffic each one joins, and a lookup stays a plain dict read.
- A tombstone (null value) deletes the entity. A value that is not a JSON object, or too large, is rejected:
  counted by reason, the entity's previous fact (if any) removed (the topic no longer says it), nothing raised.
- Applying a record never raises: a worker must not crash on what someone published to the reference topic.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Outcome = Literal["stored", "deleted", "rejected"]
# Why a record of the reference topic was rejected (the `reason` label of slmstream_facts_rejected).
REJECT_REASONS = ("no_key", "not_utf8", "too_large", "not_json", "not_object")


@dataclass(frozen=True, slots=True)
class Applied:
    """What one record did to the table."""

    outcome: Outcome
    entity: str | None
    reason: str | None = None  # one of REJECT_REASONS when rejected


class FactsTable:
    def __init__(self, max_entries: int, max_value_bytes: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.max_value_bytes = max_value_bytes
        self._facts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.evictions = 0
        self.rejected: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._facts)

    def __contains__(self, entity: object) -> bool:
        return entity in self._facts

    def get(self, entity: str) -> dict[str, Any] | None:
        return self._facts.get(entity)

    def apply(self, key: bytes | None, value: bytes | None) -> Applied:
        """One record of the reference topic: store, delete (tombstone) or reject it."""
        if not key:
            self.rejected["no_key"] += 1
            return Applied("rejected", None, "no_key")
        try:
            entity = key.decode("utf-8")
        except UnicodeDecodeError:
            self.rejected["not_utf8"] += 1
            return Applied("rejected", None, "not_utf8")
        if value is None:
            self._facts.pop(entity, None)
            return Applied("deleted", entity)
        doc, reason = self._parse(value)
        if doc is None:
            assert reason is not None
            self.rejected[reason] += 1
            self._facts.pop(entity, None)  # what the topic said before no longer holds
            return Applied("rejected", entity, reason)
        self.put(entity, doc)
        return Applied("stored", entity)

    def put(self, entity: str, facts: dict[str, Any]) -> None:
        self._facts[entity] = facts
        self._facts.move_to_end(entity)
        while len(self._facts) > self.max_entries:
            self._facts.popitem(last=False)
            self.evictions += 1

    def _parse(self, value: bytes) -> tuple[dict[str, Any] | None, str | None]:
        if len(value) > self.max_value_bytes:
            return None, "too_large"
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None, "not_json"
        return (doc, None) if isinstance(doc, dict) else (None, "not_object")
