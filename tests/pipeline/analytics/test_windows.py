"""Tumbling windows with a fake clock: alignment, closing, late events, replay, every-N and the bounds."""

from __future__ import annotations

from pipeline.analytics.windows import TumblingWindows, WindowEvent, key_of

T0 = 1_800_000_000.0  # a wall-clock second that is a multiple of 60


def ev(i: int, ts_s: float, label: str = "billing") -> WindowEvent:
    return WindowEvent(f"e{i}", f"text {i}", label, "email", int(ts_s * 1000))


def test_windows_align_to_epoch_multiples_and_close_after_grace() -> None:
    w = TumblingWindows(60, 5)
    assert w.add("a", ev(1, T0 + 1), T0 + 1) == []
    w.add("a", ev(2, T0 + 59.9), T0 + 59.9)
    w.add("b", ev(3, T0 + 30), T0 + 30)
    assert w.due(T0 + 64.9) == []  # end + grace not reached
    closed = w.due(T0 + 65.0)
    assert [(c.key, c.start_ms, c.end_ms, len(c.events), c.reason) for c in closed] == [
        ("a", int(T0 * 1000), int((T0 + 60) * 1000), 2, "time"),
        ("b", int(T0 * 1000), int((T0 + 60) * 1000), 1, "time"),
    ]
    assert w.open_windows == 0 and w.open_events == 0


def test_an_event_in_the_next_window_opens_a_new_one() -> None:
    w = TumblingWindows(60, 5)
    w.add("a", ev(1, T0 + 59), T0 + 59)
    w.add("a", ev(2, T0 + 61), T0 + 61)  # the first window is still open (grace), the second opens
    assert w.open_windows == 2
    first = w.due(T0 + 65)
    assert [len(c.events) for c in first] == [1]
    assert [len(c.events) for c in w.due(T0 + 125)] == [1]


def test_an_event_within_grace_joins_its_window() -> None:
    w = TumblingWindows(60, 5)
    w.add("a", ev(1, T0 + 10), T0 + 10)
    w.add("a", ev(2, T0 + 58), T0 + 63)  # arrives 3 s after the end, inside the grace
    (closed,) = w.due(T0 + 65)
    assert len(closed.events) == 2 and closed.late == 0


def test_an_event_whose_window_closed_goes_to_the_window_of_now_as_late() -> None:
    w = TumblingWindows(60, 5)
    w.add("a", ev(1, T0 + 10), T0 + 10)
    w.due(T0 + 65)
    w.add("a", ev(2, T0 + 20), T0 + 70)  # its window closed at T0+65
    (closed,) = w.due(T0 + 125)
    assert closed.start_ms == int((T0 + 60) * 1000) and closed.late == 1 and [e.id for e in closed.events] == ["e2"]


def test_a_window_never_opened_here_is_rebuilt_and_closes_grace_after_it_opened() -> None:
    """After a restart the records of old windows are read again: they rebuild their windows."""
    w = TumblingWindows(60, 5)
    now = T0 + 3600
    w.add("a", ev(1, T0 + 10), now)
    w.add("a", ev(2, T0 + 20), now + 1)
    assert w.due(now + 4.9) == []  # opened at `now`: closes at now + grace, not at once
    (closed,) = w.due(now + 5)
    assert len(closed.events) == 2 and closed.late == 0 and closed.start_ms == int(T0 * 1000)


def test_every_n_closes_early_and_the_rest_starts_part_1() -> None:
    w = TumblingWindows(60, 5, max_events=3)
    out = []
    for i in range(7):
        out += w.add("a", ev(i, T0 + i), T0 + i)
    assert [(c.part, len(c.events), c.reason) for c in out] == [(0, 3, "max_events"), (1, 3, "max_events")]
    (rest,) = w.due(T0 + 65)
    assert (rest.part, len(rest.events), rest.reason) == (2, 1, "time")
    assert rest.late == 0


def test_size_bound_closes_a_full_window() -> None:
    w = TumblingWindows(60, 5, max_events_per_window=2)
    assert w.add("a", ev(1, T0), T0) == []
    (full,) = w.add("a", ev(2, T0 + 1), T0 + 1)
    assert full.reason == "size" and len(full.events) == 2


def test_open_window_bound_closes_the_window_due_first() -> None:
    w = TumblingWindows(60, 5, max_open_windows=2)
    w.add("a", ev(1, T0 + 1), T0 + 1)
    w.add("b", ev(2, T0 + 2), T0 + 2)
    (evicted,) = w.add("c", ev(3, T0 + 3), T0 + 3)
    assert evicted.key == "a" and evicted.reason == "capacity"
    assert w.open_windows == 2


def test_open_event_bound_closes_windows() -> None:
    w = TumblingWindows(60, 5, max_open_events=3)
    for i in range(3):
        assert w.add(f"k{i}", ev(i, T0 + i), T0 + i) == []
    (evicted,) = w.add("k9", ev(9, T0 + 9), T0 + 9)
    assert evicted.key == "k0" and evicted.reason == "capacity" and w.open_events == 3


def test_a_duplicate_id_counts_once_and_keeps_its_ack() -> None:
    w = TumblingWindows(60, 5)
    first, dup = ev(1, T0 + 1), ev(1, T0 + 1)
    first.ack, dup.ack = (lambda: "a"), (lambda: "b")
    w.add("a", first, T0 + 1)
    w.add("a", dup, T0 + 2)
    (closed,) = w.due(T0 + 65)
    assert len(closed.events) == 1
    assert [a() for a in closed.events[0].acks()] == ["a", "b"]


def test_closed_windows_are_forgotten_after_retention() -> None:
    w = TumblingWindows(60, 5, retention_s=100)
    w.add("a", ev(1, T0 + 1), T0 + 1)
    w.due(T0 + 65)
    w.due(T0 + 300)  # past retention: the closed window is forgotten
    w.add("a", ev(2, T0 + 2), T0 + 300)  # treated like a re-read record: rebuilds its own window
    (closed,) = w.due(T0 + 305)
    assert closed.start_ms == int(T0 * 1000) and closed.late == 0


def test_next_close_at_skips_windows_closed_early() -> None:
    w = TumblingWindows(60, 5, max_events=1)
    w.add("a", ev(1, T0 + 1), T0 + 1)
    assert w.next_close_at() is None
    w.add("b", ev(2, T0 + 61), T0 + 61)
    assert w.next_close_at() is None  # closed by count at once
    w2 = TumblingWindows(60, 5)
    w2.add("a", ev(1, T0 + 1), T0 + 1)
    assert w2.next_close_at() == T0 + 65


def test_key_of_reads_key_source_and_attrs_paths() -> None:
    rec = {"key": "cust-1", "source": "chat", "attrs": {"ticket": {"id": 42}, "flag": True, "obj": {}}}
    assert key_of(rec, "key") == "cust-1"
    assert key_of(rec, "source") == "chat"
    assert key_of(rec, "attrs.ticket.id") == "42"
    assert key_of(rec, "attrs.flag") == "true"
    assert key_of(rec, "attrs.obj") == ""  # an object is not a key
    assert key_of(rec, "attrs.missing") == ""
    assert key_of({"text": "x"}, "key") == ""
    assert key_of({"attrs": "not a dict"}, "attrs.x") == ""
