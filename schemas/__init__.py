"""The records that cross topic boundaries: JSON Schema files (the contract) and the Python types the agents use.

`event.schema.json`    the input event on `events`
`enriched.schema.json` the result on `events.enriched`
`dlq.schema.json`      the dead-letter record on `events.dlq`
`summary.schema.json`  a window summary on `events.summaries`
`stats.schema.json`    per-window counts on `events.stats`
`alert.schema.json`    a spike alert on `events.alerts`
`feedback.schema.json` an analyst's label correction (or a new label) on `events.feedback`
"""

from schemas.types import DLQ_ERROR_TYPES, Event, Origin, load_schema

__all__ = ["DLQ_ERROR_TYPES", "Event", "Origin", "load_schema"]
