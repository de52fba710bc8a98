"""schemas/types.py: `new_origin` (the reader's per-record constructor) builds what `Origin(...)` builds."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import Origin
from schemas.types import new_origin

headers = st.lists(st.tuples(st.text(max_size=5), st.none() | st.binary(max_size=5)), max_size=3).map(tuple)


@given(
    st.text(max_size=8),
    st.integers(0, 2**31),
    st.integers(0, 2**63),
    st.none() | st.binary(max_size=8),
    headers,
    st.none() | st.integers(),
)
def test_new_origin_is_the_dataclass_built_the_usual_way(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    hdrs: tuple[tuple[str, bytes | None], ...],
    ts: int | None,
) -> None:
    fast, usual = new_origin(topic, partition, offset, key, hdrs, ts), Origin(topic, partition, offset, key, hdrs, ts)
    assert type(fast) is Origin
    assert fast == usual
    assert hash(fast) == hash(usual)
    assert dataclasses.astuple(fast) == dataclasses.astuple(usual)
    assert fast.ref == usual.ref


def test_new_origin_is_as_frozen_as_the_usual_one() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        new_origin("events", 0, 1, None, (), None).offset = 2  # type: ignore[misc]
