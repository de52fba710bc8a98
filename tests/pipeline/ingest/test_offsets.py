"""pipeline/ingest/offsets.py: what may be committed is the contiguous done prefix of each partition."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.ingest.offsets import AckedOffsets


def test_commit_point_waits_for_every_earlier_record() -> None:
    o: AckedOffsets[str] = AckedOffsets()
    o.assign(["p0"])
    o.read("p0", [10, 11, 12])
    o.done([("p0", 11), ("p0", 12)])  # finished out of order: 10 still in the model
    assert o.advanced() == {}
    assert o.held("p0") == 3
    o.done([("p0", 10)])
    assert o.advanced() == {"p0": 13}
    assert o.held("p0") == 0


def test_advanced_only_reports_what_moved_since_the_last_commit() -> None:
    o: AckedOffsets[str] = AckedOffsets()
    o.assign(["a", "b"])
    o.read("a", [0, 1])
    o.read("b", [5])
    o.done([("a", 0), ("b", 5)])
    assert o.advanced() == {"a": 1, "b": 6}
    o.committed({"a": 1, "b": 6})
    assert o.advanced() == {}
    assert o.last_committed("a") == 1
    o.done([("a", 1)])
    assert o.advanced() == {"a": 2}
    assert o.advanced(["b"]) == {}


def test_gaps_in_offsets_are_fine() -> None:
    o: AckedOffsets[str] = AckedOffsets()
    o.assign(["p"])
    o.read("p", [3, 7, 9])  # compaction or transaction markers leave gaps
    o.done([("p", 3), ("p", 7)])
    assert o.advanced() == {"p": 8}


def test_unassigned_and_forgotten_partitions_are_ignored() -> None:
    o: AckedOffsets[str] = AckedOffsets()
    assert o.read("x", [1]) is False
    o.assign(["p"])
    o.read("p", [0])
    o.forget(["p"])  # revoked: a late report of its record commits nothing
    o.done([("p", 0)])
    assert o.advanced() == {}
    assert o.held("p") == 0


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_never_past_a_record_not_done(order: list[int], n_done: int) -> None:
    o: AckedOffsets[str] = AckedOffsets()
    o.assign(["p"])
    o.read("p", range(30))
    finished = order[:n_done]
    o.done(("p", off) for off in finished)
    expected = 0
    while expected in finished:
        expected += 1
    assert o.advanced().get("p", 0) == expected
