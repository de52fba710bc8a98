"""pipeline/ingest/validate.py: the fast path for epoch-millisecond timestamps answers as the checked path."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.ingest.validate import MAX_EPOCH_MS, MIN_EPOCH_MS, parse_ts, parse_ts_checked

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
