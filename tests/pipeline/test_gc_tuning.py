"""pipeline/gc_tuning.py: startup garbage is collected, not frozen; what is alive is frozen; thresholds raised."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from pipeline.gc_tuning import OLDER_THRESHOLD, YOUNG_THRESHOLD, settle_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_settle_heap_collects_cycles_first_then_freezes_the_living(restored_gc: None) -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a reference cycle: only the cyclic collector frees it
    garbage = weakref.ref(a)
    del a, b
    kept = _Node()
    assert garbage() is not None

    frozen = settle_heap()

    assert garbage() is None  # collected before the freeze: startup garbage is not kept for the worker's life
    assert frozen == gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # alive at the freeze: out of every generation
    assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)


def test_cycles_made_after_settling_are_still_collected(restored_gc: None) -> None:
    settle_heap()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    garbage = weakref.ref(a)
    del a, b
    gc.collect()
    assert garbage() is None
