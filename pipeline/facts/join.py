"""The join: an event's join field (`facts.join_field`) → its entity's facts, as the enriched record carries them.

Per batch (the scheduler calls `facts_of` once per model batch): one dict read per event, the hit and miss
counts reported once. An event without the field, or whose entity the table does not hold, gets None (the
enriched record then has no `facts`). The record carries the facts as they were when its batch was built: a
later update reaches later events, not records already written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pipeline.facts.table import FactsTable
from schemas import Event

# {"entity": "<id>", "values": {...}}: what the enriched record's `facts` holds (schemas/enriched.schema.json).
FactsDoc = dict[str, Any]


def join_value(event: Event, spec: str) -> str | None:
    """The entity id an event names in `spec` (`key`, `source`, `id`, `attrs.<path>`): strings as they are,
    numbers as their text; None when absent, empty or anything else."""
    if spec == "id":
        return event.id
    value: Any = event.fields
    for part in spec.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


class FactsJoin:
    def __init__(
        self, table: FactsTable, join_field: str, observe: Callable[[int, int], None] = lambda hits, misses: None
    ) -> None:
        self.table = table
        self.join_field = join_field
        self.observe = observe  # (hits, misses) of each batch: the metrics
        self.hits = 0
        self.misses = 0

    def facts_of(self, events: Sequence[Event]) -> list[FactsDoc | None]:
        """Each event's `facts` for its enriched record (None: no match)."""
        get, spec = self.table.get, self.join_field
        out: list[FactsDoc | None] = []
        hits = 0
        for ev in events:
            entity = join_value(ev, spec)
            values = get(entity) if entity is not None else None
            if values is None:
                out.append(None)
            else:
                hits += 1
                out.append({"entity": entity, "values": values})
        misses = len(events) - hits
        self.hits += hits
        self.misses += misses
        self.observe(hits, misses)
        return out
