"""The records that cross topic boundaries: JSON Schema files (the contract) and the Python types the agents use.

`event.schema.json`    the input event on `events`
`enriched.schema.json` the result on `events.enriched`
`dlq.schema.json`      the dead-letter record on `events.dlq`
"""

from schemas.types import DLQ_ERROR_TYPES, Event, Origin, load_schema

__all__ = ["DLQ_ERROR_TYPES", "Event", "Origin", "load_schema"]
