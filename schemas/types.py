"""Python types for the records in this folder's JSON Schema files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

# The `error.type` values a DLQ record may carry (kept equal to dlq.schema.json by a test).
DLQ_ERROR_TYPES = (
    "empty_message",
    "too_large",
    "not_utf8",
    "not_json",
    "too_deep",
    "not_object",
    "missing_field",
    "empty_text",
    "text_too_long",
    "wrong_type",
    "bad_timestamp",
    "model_error",
)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message was read: enough to find it again and to name it when it has no id."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int | None = None

    @property
    def ref(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(slots=True)
class Event:
    """A validated input event. `fields` is the JSON object as received (extra fields pass through)."""

    id: str
    text: str
    ts_ms: int
    fields: dict[str, Any]
    origin: Origin
    deferred: bool = False
    # Filled by the worker: when it arrived (monotonic seconds) and its deadline (wall-clock seconds).
    arrived: float = 0.0
    deadline: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Load `event`, `enriched` or `dlq` schema from this package."""
    text = resources.files("schemas").joinpath(f"{name}.schema.json").read_text()
    return json.loads(text)
