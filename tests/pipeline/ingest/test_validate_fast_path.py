"""pipeline/ingest/validate.py: the fast paths (epoch-millisecond timestamps, parsing the bytes without decoding
them first, the usual event's fields in a few type checks) answer as the checked paths."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import InputSettings
from pipeline.ingest.validate import MAX_EPOCH_MS, MIN_EPOCH_MS, parse_ts, parse_ts_checked, validate, validate_checked
from schemas import Origin

near_bounds = st.sampled_from([MIN_EPOCH_MS, MAX_EPOCH_MS]).flatmap(lambda b: st.integers(b - 3, b + 3))
timestamps: st.SearchStrategy[Any] = st.one_of(
    st.integers(),
    near_bounds,
    st.integers(MIN_EPOCH_MS, MAX_EPOCH_MS),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=40),
    st.none(),
)


@given(timestamps)
def test_parse_ts_equals_the_checked_path(v: Any) -> None:
    fast, checked = parse_ts(v), parse_ts_checked(v)
    assert fast == checked
    assert type(fast) is type(checked)


# ---- parsing the bytes directly (orjson checks the UTF-8) vs decoding them to a str first ----------------------
LIMITS = InputSettings(max_text_chars=20)  # texts of up to 30 characters cross the limit
ORIGIN = Origin("events", 0, 7, b"k", (), 1_765_000_000_000)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=25,
)
short_fields = st.text(max_size=8) | st.text(min_size=255, max_size=257) | st.none() | st.integers()  # 256: the limit
event_docs = st.fixed_dictionaries(
    {"text": st.text(min_size=0, max_size=30) | st.sampled_from([" ", "\t\n"]) | st.none()},
    optional={
        "id": short_fields,
        "ts": timestamps,
        "source": short_fields,
        "key": short_fields,
        "attrs": json_values | st.dictionaries(st.text(max_size=3), json_values, max_size=2),
    },
)


def _dumps(doc: Any) -> bytes:
    """Any JSON value as UTF-8 bytes, lone surrogates and integers past 64 bits included (orjson refuses both)."""
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _mangled(data: bytes, at: int, junk: bytes) -> bytes:
    """Bytes with `junk` put in at a position: invalid UTF-8, stray surrogates, broken JSON."""
    at = at % (len(data) + 1)
    return data[:at] + junk + data[at:]


messages = st.one_of(
    st.binary(max_size=64),
    event_docs.map(_dumps),
    json_values.map(_dumps),
    st.builds(
        _mangled,
        event_docs.map(_dumps),
        st.integers(0, 200),
        st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82", b"{", b"]", b"\x00", b"\xef\xbb\xbf"]),
    ),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(0, 40).map(lambda n: b"[" * n + b"]" * n),
    st.integers(0, 40).map(lambda n: b'{"text":"x","attrs":' + b'{"a":' * n + b"1" + b"}" * n + b"}"),
)


@given(messages)
def test_validate_equals_the_decode_then_parse_path(value: bytes) -> None:
    fast, checked = validate(value, ORIGIN, LIMITS), validate_checked(value, ORIGIN, LIMITS)
    assert type(fast) is type(checked)
    assert fast == checked


# The usual event (what `_event_from_object` takes in a few type checks), and its near misses.
usual_events = st.fixed_dictionaries(
    {
        "text": st.text(min_size=1, max_size=22) | st.sampled_from([" ", "\t\n", "\u3000"]),
        "id": st.text(min_size=1, max_size=8) | st.text(min_size=255, max_size=257),
        "ts": st.integers(MIN_EPOCH_MS, MAX_EPOCH_MS) | near_bounds,
    },
    optional={
        "source": short_fields,
        "key": short_fields,
        "attrs": st.dictionaries(st.text(max_size=3), st.integers()) | json_values,
    },
)


@given(usual_events)
def test_the_usual_event_equals_the_checked_path(doc: dict[str, Any]) -> None:
    value = _dumps(doc)
    fast, checked = validate(value, ORIGIN, LIMITS), validate_checked(value, ORIGIN, LIMITS)
    assert type(fast) is type(checked)
    assert fast == checked
