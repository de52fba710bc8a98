"""Feedback message bytes → a `Feedback` (an example by id or by text, or a new label's definition), or a
`Rejection` saying exactly what is wrong (schemas/feedback.schema.json; the DLQ carries the reason).

Pure, like pipeline/ingest/validate.py: nothing here raises on input. Whether a label is known (configured or
added through feedback) is the caller's question: `known_labels` is passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass

import orjson

from pipeline.config import MAX_DESCRIPTION_CHARS, InputSettings
from pipeline.ingest.validate import MAX_SHORT_FIELD, Rejection, parse_ts

MAX_LABEL_CHARS = 64
MAX_FEEDBACK_BYTES = 65536
FIELDS = frozenset({"id", "text", "label", "description", "by", "ts"})


@dataclass(frozen=True, slots=True)
class Feedback:
    """`label` for the event `id` or for `text` (exactly one is set), or, with `description`, a new label."""

    label: str
    id: str | None = None
    text: str | None = None
    description: str | None = None
    by: str | None = None
    ts_ms: int | None = None

    @property
    def is_new_label(self) -> bool:
        return self.description is not None


def label_name_ok(name: str) -> bool:
    """The configured labels' rule (pipeline/config.py): letters, digits, '_' or '-'; not `unknown`."""
    return 0 < len(name) <= MAX_LABEL_CHARS and name != "unknown" and name.replace("_", "").replace("-", "").isalnum()


def example_key(text: str) -> str:
    """The store's key of an example: the same text taught twice is one example (the latest label wins)."""
    return "example:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def parse_feedback(value: bytes | None, known_labels: Collection[str], limits: InputSettings) -> Feedback | Rejection:
    """Validate one feedback message. A label definition for a known label is `label_exists`; feedback naming
    a label that is not known is `unknown_label`."""
    if not value:
        return Rejection("empty_message", "message value is empty or null")
    if len(value) > MAX_FEEDBACK_BYTES:
        return Rejection("too_large", f"message is {len(value)} bytes; the limit is {MAX_FEEDBACK_BYTES}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if isinstance(exc.__cause__, UnicodeDecodeError) or "utf-8" in str(exc).lower():
            return Rejection("not_utf8", "not valid UTF-8")
        return Rejection("not_json", f"not valid JSON: {exc}")
    if not isinstance(doc, dict):
        return Rejection("not_object", "expected a JSON object")
    extra = sorted(set(doc) - FIELDS)
    if extra:
        return Rejection("wrong_type", f"unknown field(s) {', '.join(f'`{k}`' for k in extra[:5])}")
    for name in FIELDS:
        if name in doc and name != "ts" and not isinstance(doc[name], str):
            return Rejection("wrong_type", f"`{name}` must be a string")
    if "label" not in doc:
        return Rejection("missing_field", "required field `label` is missing")
    label: str = doc["label"]
    given = [k for k in ("id", "text", "description") if k in doc]
    if len(given) != 1:
        return Rejection("missing_field", "give exactly one of `id`, `text` (with `label`) or `description`")
    by = doc.get("by")
    if by is not None and len(by) > MAX_SHORT_FIELD:
        return Rejection("wrong_type", f"`by` is longer than {MAX_SHORT_FIELD} characters")
    ts_ms: int | None = None
    if "ts" in doc:
        ts = parse_ts(doc["ts"])
        if isinstance(ts, Rejection):
            return ts
        ts_ms = ts
    if not label_name_ok(label):
        return Rejection(
            "wrong_type", f"label name {label[:80]!r}: use up to {MAX_LABEL_CHARS} letters, digits, '_' or '-'"
        )
    kind = given[0]
    if kind == "description":
        description: str = doc["description"]
        if not description.strip() or len(description) > MAX_DESCRIPTION_CHARS:
            return Rejection("wrong_type", f"`description` must be 1 to {MAX_DESCRIPTION_CHARS} characters")
        if label in known_labels:
            return Rejection("label_exists", f"label {label!r} exists already")
        return Feedback(label, description=description, by=by, ts_ms=ts_ms)
    if label not in known_labels:
        hint = "add it with `slmstream label --new`"
        return Rejection("unknown_label", f"label {label!r} is not in the taxonomy ({hint})")
    if kind == "id":
        ident: str = doc["id"]
        if not ident or len(ident) > MAX_SHORT_FIELD:
            return Rejection("wrong_type", f"`id` must be 1 to {MAX_SHORT_FIELD} characters")
        return Feedback(label, id=ident, by=by, ts_ms=ts_ms)
    text: str = doc["text"]
    if not text.strip():
        return Rejection("empty_text", "`text` is empty or only whitespace")
    if len(text) > limits.max_text_chars:
        return Rejection("text_too_long", f"`text` has {len(text)} characters; the limit is {limits.max_text_chars}")
    return Feedback(label, text=text, by=by, ts_ms=ts_ms)


def feedback_key(label: str) -> bytes:
    """Feedback is keyed by its label: a new label's definition and its examples share a partition, in order."""
    return label.encode()


def feedback_json(
    label: str,
    *,
    id: str | None = None,  # noqa: A002  the field's name in the schema
    text: str | None = None,
    description: str | None = None,
    by: str | None = None,
    ts_ms: int | None = None,
) -> bytes:
    """A feedback record's bytes, as `slmstream label` and the dashboard publish them (key: the label)."""
    doc: dict[str, object] = {"label": label}
    for name, value in (("id", id), ("text", text), ("description", description), ("by", by), ("ts", ts_ms)):
        if value is not None:
            doc[name] = value
    return orjson.dumps(doc)
