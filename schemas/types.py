"""Python types for the records in this folder's JSON Schema files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, TypedDict

# The `error.type` values of feedback the worker cannot learn from (schemas/feedback.schema.json,
# pipeline/learning/feedback.py): never given to an event.
FEEDBACK_ERROR_TYPES = ("unknown_label", "unknown_id", "label_exists", "too_many_labels")

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
    *FEEDBACK_ERROR_TYPES,
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


# A frozen dataclass's __init__ sets each field through object.__setattr__ (~0.3 µs a field); the reader builds
# an Origin per record, so it sets the slots through their descriptors instead (tests compare the two).
_new_object = object.__new__
_ORIGIN_SLOTS = Origin.__dict__  # with slots=True each field is a member descriptor there
_set_topic = _ORIGIN_SLOTS["topic"].__set__
_set_partition = _ORIGIN_SLOTS["partition"].__set__
_set_offset = _ORIGIN_SLOTS["offset"].__set__
_set_key = _ORIGIN_SLOTS["key"].__set__
_set_headers = _ORIGIN_SLOTS["headers"].__set__
_set_timestamp_ms = _ORIGIN_SLOTS["timestamp_ms"].__set__


def new_origin(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    headers: tuple[tuple[str, bytes | None], ...],
    timestamp_ms: int | None,
) -> Origin:
    """`Origin(topic, partition, offset, key, headers, timestamp_ms)`, at half the cost (the hot path's)."""
    origin: Origin = _new_object(Origin)
    _set_topic(origin, topic)
    _set_partition(origin, partition)
    _set_offset(origin, offset)
    _set_key(origin, key)
    _set_headers(origin, headers)
    _set_timestamp_ms(origin, timestamp_ms)
    return origin


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


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Load a schema from this package: `event`, `enriched`, `dlq`, `summary`, `stats` or `alert`."""
    text = resources.files("schemas").joinpath(f"{name}.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


class FeedbackRecord(TypedDict, total=False):
    """One record on the feedback topic (schemas/feedback.schema.json): `label` and one of `id`, `text` or
    `description` (a new label's definition)."""

    id: str
    text: str
    label: str
    description: str
    by: str
    ts: int | str


LANG_UNDETERMINED = "und"  # analysis.lang when language ID is unsure (ISO 639-2 "undetermined")


class LanguageAnalysis(TypedDict):
    """The language fields of an enriched record's `analysis` (present when model.language_id is on)."""

    lang: str  # fastText lid.176 code: ISO 639-1 where there is one ("en", "zh"), else 3 letters; "und": unsure
    lang_supported: bool  # the encoder that classified it was trained on `lang`


class WindowBounds(TypedDict):
    """A window of the summary, alert and stats records: RFC 3339 and epoch milliseconds, [start, end)."""

    start: str
    end: str
    start_ms: int
    end_ms: int
    part: int  # 0; 1, 2, ... for later windows of the same time range after an every-N (or size) close
    closed_by: str  # time | max_events | size | capacity | shutdown


class TextLanguage(TypedDict, total=False):
    """Optional fields of summary and alert records (a base of its own: `from __future__ import annotations`
    hides NotRequired from TypedDict)."""

    lang: str  # the language of the texts, when language ID ran
    reason: str  # why extractive although a generator is configured ("generator does not read de", "ungrounded: 99")


class SummaryRecord(TextLanguage):
    key: str
    window: WindowBounds
    count: int
    late: int
    labels: dict[str, int]
    summary: str
    method: str  # abstractive | extractive
    model: str
    latency_ms: float  # from the window's close to the record
    budget_met: bool
    sample_ids: list[str]
    revision: int  # events covered: of several records of one key/window/part keep the highest (final, revision)
    final: bool


class Baseline(TypedDict):
    mean: float
    std: float
    windows: int


class AlertRecord(TextLanguage):
    label: str
    window: WindowBounds
    count: int
    baseline: Baseline
    ratio: float
    z: float | None
    rule: str  # ratio | z | ratio+z
    sample_ids: list[str]
    explanation: str
    method: str
    model: str


class StatsRecord(TypedDict):
    window: WindowBounds
    events: int
    late: int
    labels: dict[str, int]
    sources: dict[str, int]
    latency_ms: dict[str, float | None]
    partitions: int  # of events.enriched.by-key covered
    by_partition: dict[str, int]
    final: bool  # every partition covered; readers keep the highest (final, revision) per window
    revision: int
    spikes: list[str]  # labels alerted in this window
