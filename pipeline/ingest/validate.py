"""Raw message bytes → a validated `Event`, or a `Rejection` saying exactly what is wrong.

This is the fast path that mirrors schemas/event.schema.json (a test checks the two agree). Every check
runs before any model work, and nothing here raises on input: hostile bytes come back as a Rejection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from pipeline.config import InputSettings
from schemas import Event, Origin

MIN_EPOCH_MS = 100_000_000_000  # 1973: anything smaller is almost surely epoch *seconds*
MAX_EPOCH_MS = 32_503_680_000_000  # year 3000
MAX_SHORT_FIELD = 256
# Tuples, not `int | float`: a union in an expression is built again at every call.
_TS_TYPES = (int, float, str)
_NUMBERS = (int, float)
_CONTAINERS = (dict, list)
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


@dataclass(frozen=True, slots=True)
class Rejection:
    type: str
    message: str


def validate(value: bytes | None, origin: Origin, limits: InputSettings) -> Event | Rejection:
    """Validate one message value; the `origin` names it when the event has no `id` or `ts`."""
    if not value:
        return Rejection("empty_message", "message value is empty or null")
    if len(value) > limits.max_event_bytes:
        return Rejection("too_large", f"message is {len(value)} bytes; the limit is {limits.max_event_bytes}")
    try:  # the usual case: orjson checks the UTF-8 itself, and no str copy of the message is made
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        doc = _parse_text(value, limits)  # what is wrong, in the words of the decode-then-parse path
        if type(doc) is Rejection:
            return doc
    return _event_from_doc(doc, value, origin, limits)


def validate_checked(value: bytes | None, origin: Origin, limits: InputSettings) -> Event | Rejection:
    """`validate` without its fast paths: the bytes decoded to a str, then parsed, then each field checked in turn
    (tests compare the two)."""
    if not value:
        return Rejection("empty_message", "message value is empty or null")
    if len(value) > limits.max_event_bytes:
        return Rejection("too_large", f"message is {len(value)} bytes; the limit is {limits.max_event_bytes}")
    doc = _parse_text(value, limits)
    if type(doc) is Rejection:
        return doc
    return _event_from_doc(doc, value, origin, limits, checked=True)


def _parse_text(value: bytes, limits: InputSettings) -> Any:
    """`value` decoded as UTF-8 and parsed, or a Rejection saying which of the two failed."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"not valid UTF-8 at byte {exc.start}")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc) or "depth limit" in str(exc):  # orjson's own nesting limit (1024)
            return Rejection("too_deep", f"JSON nesting is deeper than {limits.max_depth} levels")
        return Rejection("not_json", f"not valid JSON: {exc}")


def _event_from_doc(
    doc: Any, value: bytes, origin: Origin, limits: InputSettings, *, checked: bool = False
) -> Event | Rejection:
    if not isinstance(doc, dict):
        return Rejection("not_object", f"expected a JSON object, got {_json_type(doc)}")
    # A JSON text nests at most as deep as it has opening brackets: count them in C, walk only when needed.
    if value.count(b"{") + value.count(b"[") > limits.max_depth and _depth(doc, limits.max_depth) > limits.max_depth:
        return Rejection("too_deep", f"JSON nesting is deeper than {limits.max_depth} levels")
    return (_event_from_object_checked if checked else _event_from_object)(doc, origin, limits)


_NO_ATTRS: dict[str, Any] = {}  # what `attrs` reads as when absent (never changed)


def _event_from_object(doc: dict[str, Any], origin: Origin, limits: InputSettings) -> Event | Rejection:
    """The usual event (a text, an id, epoch-millisecond `ts`) in a few type checks; anything else, valid or not,
    takes `_event_from_object_checked`, which says what is wrong (tests compare the two)."""
    get = doc.get
    text, event_id, ts = get("text"), get("id"), get("ts")
    if (
        type(text) is str
        and type(event_id) is str
        and type(ts) is int
        and 0 < len(text) <= limits.max_text_chars
        and 0 < len(event_id) <= MAX_SHORT_FIELD
        and MIN_EPOCH_MS <= ts <= MAX_EPOCH_MS
        and not text.isspace()
        and type(source := get("source", "")) is str  # absent reads as "", null as None (not a str)
        and len(source) <= MAX_SHORT_FIELD
        and type(key := get("key", "")) is str
        and len(key) <= MAX_SHORT_FIELD
        and type(get("attrs", _NO_ATTRS)) is dict
    ):
        return Event(event_id, text, ts, doc, origin)
    return _event_from_object_checked(doc, origin, limits)


def _event_from_object_checked(doc: dict[str, Any], origin: Origin, limits: InputSettings) -> Event | Rejection:
    if "text" not in doc:
        return Rejection("missing_field", "required field `text` is missing")
    text = doc["text"]
    if not isinstance(text, str):
        return Rejection("wrong_type", f"`text` must be a string, got {_json_type(text)}")
    if not text or text.isspace():  # `not text.strip()`, without copying the text
        return Rejection("empty_text", "`text` is empty or only whitespace")
    if len(text) > limits.max_text_chars:
        return Rejection("text_too_long", f"`text` has {len(text)} characters; the limit is {limits.max_text_chars}")

    for name in ("id", "source", "key"):
        if name in doc:
            v = doc[name]
            if not isinstance(v, str):
                return Rejection("wrong_type", f"`{name}` must be a string, got {_json_type(v)}")
            if len(v) > MAX_SHORT_FIELD:
                return Rejection("wrong_type", f"`{name}` is longer than {MAX_SHORT_FIELD} characters")
    if "id" in doc and not doc["id"]:
        return Rejection("wrong_type", "`id` must not be empty")
    if "attrs" in doc and not isinstance(doc["attrs"], dict):
        return Rejection("wrong_type", f"`attrs` must be an object, got {_json_type(doc['attrs'])}")

    if "ts" in doc:
        ts = parse_ts(doc["ts"])
        if isinstance(ts, Rejection):
            return ts
    elif origin.timestamp_ms is not None:
        ts = origin.timestamp_ms
    else:
        return Rejection("bad_timestamp", "no `ts` field and the message has no Kafka timestamp")

    return Event(doc.get("id") or origin.ref, text, ts, doc, origin)  # id, text, ts_ms, fields, origin


def parse_ts(v: Any) -> int | Rejection:
    """RFC 3339 with an offset, or epoch milliseconds → epoch milliseconds."""
    if type(v) is int and MIN_EPOCH_MS <= v <= MAX_EPOCH_MS:  # the usual case, as parse_ts_checked returns it
        return v
    return parse_ts_checked(v)


def parse_ts_checked(v: Any) -> int | Rejection:
    """`parse_ts` without its fast path for epoch milliseconds in range."""
    if isinstance(v, bool) or not isinstance(v, _TS_TYPES):
        return Rejection("wrong_type", f"`ts` must be an RFC 3339 string or epoch milliseconds, got {_json_type(v)}")
    if isinstance(v, str):
        # fromisoformat alone accepts ISO 8601 forms that RFC 3339 does not (week dates, "+02", "T20Z"...)
        if not RFC3339.fullmatch(v):
            return Rejection("bad_timestamp", f"`ts` {v[:40]!r} is not RFC 3339 (e.g. 2026-11-27T20:52:34Z)")
        try:
            dt = datetime.fromisoformat(v.upper())  # RFC 3339 allows "t" and "z"; fromisoformat (3.11) does not
        except ValueError:
            return Rejection("bad_timestamp", f"`ts` {v[:40]!r} is not a valid date and time")
        return int(dt.timestamp() * 1000)
    if not MIN_EPOCH_MS <= v <= MAX_EPOCH_MS:
        hint = " (it looks like seconds)" if 1e8 < v < MIN_EPOCH_MS else ""
        return Rejection("bad_timestamp", f"`ts` {v} is out of range for epoch milliseconds{hint}")
    return int(v)


def _depth(doc: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, stopping as soon as it passes `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            break
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, level + 1) for c in children if isinstance(c, _CONTAINERS))
    return deepest


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, _NUMBERS):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"
