"""pipeline/batching/batcher.py: DeadlineBatcher driven by a fake clock (plain numbers, in seconds)."""

from __future__ import annotations

import pytest

from pipeline.batching.batcher import DeadlineBatcher
from pipeline.batching.service_time import ServiceTime

FIXED, PER_ITEM, MARGIN = 0.010, 0.002, 0.005


def known_service_time() -> ServiceTime:
    """A ServiceTime whose estimate is exactly 10 ms + 2 ms per item, after some observations on that line."""
    st = ServiceTime(fixed_s=FIXED, per_item_s=PER_ITEM)
    for n in (1, 2, 4, 8, 16, 3, 7):
        st.observe(n, FIXED + PER_ITEM * n)
    return st


def est(n: int) -> float:
    return FIXED + PER_ITEM * n


def make(max_batch: int = 8, max_wait_s: float = 1.0, margin_s: float = MARGIN) -> DeadlineBatcher[str]:
    st = known_service_time()
    assert st.estimate(3) == pytest.approx(est(3), abs=1e-9)
    return DeadlineBatcher(max_batch, max_wait_s, st, margin_s)


def test_empty_batcher_is_never_ready() -> None:
    b = make()
    assert b.due_at() is None
    assert not b.ready(1e9)
    assert len(b) == 0


def test_rejects_max_batch_below_one() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        DeadlineBatcher(0, 1.0, ServiceTime())


def test_closes_on_size() -> None:
    b = make(max_batch=3, max_wait_s=10.0)
    b.add("a", deadline=100.0, now=1.0)
    b.add("b", deadline=100.0, now=1.1)
    assert not b.ready(1.1)
    b.add("c", deadline=100.0, now=1.2)
    assert b.due_at() == 1.0  # full: due since the oldest arrived
    assert b.ready(1.2)


def test_closes_before_the_earliest_deadline_would_be_missed() -> None:
    b = make(max_batch=10, max_wait_s=10.0)
    b.add("a", deadline=0.100, now=0.0)
    # Latest start = deadline - estimate(1) - margin.
    due = b.due_at()
    assert due == pytest.approx(0.100 - est(1) - MARGIN, abs=1e-9)
    assert due == pytest.approx(0.083, abs=1e-9)
    assert not b.ready(due - 1e-6)
    assert b.ready(due)

    # More events: the earliest deadline is what matters, and a bigger batch takes longer.
    b.add("b", deadline=0.300, now=0.01)
    b.add("c", deadline=0.090, now=0.02)
    due3 = b.due_at()
    assert due3 == pytest.approx(0.090 - est(3) - MARGIN, abs=1e-9)
    assert not b.ready(due3 - 1e-6)
    assert b.ready(due3)


def test_closes_on_max_wait_when_deadlines_leave_slack() -> None:
    b = make(max_batch=10, max_wait_s=0.025)
    b.add("a", deadline=10.0, now=5.0)
    b.add("b", deadline=10.0, now=5.02)
    assert b.due_at() == pytest.approx(5.025)
    assert not b.ready(5.0249)
    assert b.ready(5.025)


def test_does_not_close_early() -> None:
    b = make(max_batch=4, max_wait_s=0.050)
    b.add("a", deadline=1.0, now=0.0)
    for t in (0.0, 0.01, 0.03, 0.0499):
        assert not b.ready(t), t
    assert b.ready(0.050)
    assert len(b) == 1


def test_event_already_past_its_deadline_is_due_immediately() -> None:
    b = make(max_batch=10, max_wait_s=10.0)
    b.add("late", deadline=4.0, now=5.0)
    assert b.due_at() < 5.0
    assert b.ready(5.0)


def test_take_returns_oldest_first_at_most_max_batch() -> None:
    b = make(max_batch=3, max_wait_s=0.0)
    for i in range(7):
        b.add(f"e{i}", deadline=100.0, now=float(i) / 100)
    first = b.take(now=1.0)
    assert [p.item for p in first.on_time] == ["e0", "e1", "e2"]
    assert first.late == []
    assert len(first) == 3
    assert len(b) == 4
    assert [p.item for p in b.take(now=1.0).on_time] == ["e3", "e4", "e5"]
    assert [p.item for p in b.take(now=1.0).on_time] == ["e6"]
    assert len(b) == 0
    assert len(b.take(now=1.0)) == 0


def test_take_keeps_arrival_and_deadline() -> None:
    b = make()
    b.add("a", deadline=3.5, now=1.25)
    (p,) = b.take(now=2.0).on_time
    assert (p.item, p.deadline, p.arrived) == ("a", 3.5, 1.25)


def test_take_splits_late_from_on_time() -> None:
    b = make(max_batch=10, max_wait_s=0.0)
    now = 10.0
    finish = now + est(4) + MARGIN  # 10.023
    b.add("on_time", deadline=finish + 0.001, now=now)
    b.add("exactly", deadline=finish, now=now)
    b.add("late", deadline=finish - 0.001, now=now)
    b.add("long_gone", deadline=now - 5.0, now=now)
    batch = b.take(now)
    assert [p.item for p in batch.on_time] == ["on_time", "exactly"]
    assert [p.item for p in batch.late] == ["late", "long_gone"]
    assert len(batch) == 4


def test_late_split_uses_the_estimate_for_the_taken_batch_size() -> None:
    b = make(max_batch=2, max_wait_s=0.0, margin_s=0.0)
    # With 2 items, finish = now + est(2) = now + 0.014; a deadline at now + 0.013 is late.
    b.add("a", deadline=0.013, now=0.0)
    b.add("b", deadline=0.015, now=0.0)
    b.add("c", deadline=0.0, now=0.0)  # not in this batch: max_batch=2
    batch = b.take(0.0)
    assert [p.item for p in batch.late] == ["a"]
    assert [p.item for p in batch.on_time] == ["b"]
    assert len(b) == 1


def test_due_at_looks_only_at_the_next_batch() -> None:
    # FIFO: an urgent event behind a full batch does not change when the head batch is due...
    b = make(max_batch=2, max_wait_s=100.0)
    b.add("a", deadline=50.0, now=0.0)
    assert b.due_at() == pytest.approx(50.0 - est(1) - MARGIN)
    b.add("b", deadline=50.0, now=0.0)
    b.add("urgent", deadline=0.5, now=0.0)
    assert b.due_at() == 0.0  # ...here it is due anyway, because the head batch is full
    b.take(0.0)
    assert b.due_at() == pytest.approx(0.5 - est(1) - MARGIN)
