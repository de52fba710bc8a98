"""StatsMerger: per-partition partials of a window merged into one stats record, revisions, restore."""

from __future__ import annotations

import jsonschema

from pipeline.analytics.merge import MergedWindow, StatsMerger, empty_partial, latency_bucket, partial_record
from pipeline.analytics.windows import Window, WindowEvent
from schemas import load_schema

START, END = 1_800_000_000_000, 1_800_000_010_000


def part(p: int, labels: list[str], latency: float = 40.0) -> dict:
    w = Window(str(p), START, END, 0, 0.0, 0.0)
    w.events = [
        WindowEvent(f"p{p}e{i}", f"text {i}", label, "email", START + 1000 + i, latency)
        for i, label in enumerate(labels)
    ]
    return partial_record(w, p, START, END)


def merged(out) -> MergedWindow:
    (m,) = out
    assert isinstance(m, MergedWindow)
    return m


def test_a_window_is_merged_once_every_partition_is_in_and_acked_after() -> None:
    m = StatsMerger(3, wait_s=30)
    acked: list[int] = []
    assert m.add(part(0, ["billing", "billing"]), lambda: acked.append(0), 0, 100.0) == []
    assert m.add(empty_partial(1, START, END), lambda: acked.append(1), 0, 100.0) == []
    out = merged(m.add(part(2, ["shipping"], 60.0), lambda: acked.append(2), 0, 101.0))
    r = out.record
    jsonschema.validate(r, load_schema("stats"))
    assert (r["events"], r["labels"], r["partitions"], r["final"], r["revision"]) == (
        3,
        {"billing": 2, "shipping": 1},
        3,
        True,
        1,
    )
    assert r["by_partition"] == {"0": 2, "1": 0, "2": 1}
    assert r["latency_ms"] == {"mean": 46.67, "p95": 60.0}
    assert out.texts == {"billing": ["text 0", "text 1"], "shipping": ["text 0"]}
    assert len(out.acks) == 3 and acked == []  # the caller runs them once the record is stored


def test_a_re_read_partial_is_not_added_and_emits_nothing_new() -> None:
    m = StatsMerger(2, wait_s=30)
    m.add(part(0, ["billing"] * 3), lambda: None, 0, 100.0)
    merged(m.add(part(1, ["billing"]), lambda: None, 0, 100.0))
    # The same partition's partial again (a re-read after a crash): a subset of what was merged.
    (acks,) = m.add(part(0, ["billing"] * 2), lambda: None, 0, 120.0)
    assert isinstance(acks, list) and len(acks) == 1
    # One over more records (the rest of a partition read after a rebalance): a new revision.
    r = merged(m.add(part(1, ["billing"] * 4), lambda: None, 0, 121.0)).record
    assert (r["events"], r["revision"], r["final"]) == (7, 2, True)


def test_an_incomplete_window_is_merged_non_final_after_the_wait_then_final() -> None:
    m = StatsMerger(2, wait_s=30)
    m.add(part(0, ["billing"]), lambda: None, 0, 100.0)
    assert m.due(129.0) == [] and m.next_due_at() == 130.0
    r1 = merged(m.due(130.0)).record
    assert (r1["final"], r1["revision"], r1["partitions"]) == (False, 1, 1)
    r2 = merged(m.add(part(1, ["praise"]), lambda: None, 0, 140.0)).record
    assert (r2["final"], r2["revision"], r2["events"]) == (True, 2, 2)


def test_an_idle_window_emits_no_record() -> None:
    m = StatsMerger(2, wait_s=30)
    m.add(empty_partial(0, START, END), lambda: None, 0, 100.0)
    (acks,) = m.add(empty_partial(1, START, END), lambda: None, 0, 100.0)
    assert isinstance(acks, list) and len(acks) == 2


def test_restore_remembers_merged_windows_so_re_read_partials_add_nothing() -> None:
    first = StatsMerger(2, wait_s=30)
    first.add(part(0, ["billing"]), lambda: None, 0, 100.0)
    stored = merged(first.add(part(1, ["billing"]), lambda: None, 0, 100.0)).record
    stored["spikes"] = ["billing"]
    restarted = StatsMerger(2, wait_s=30)
    kept = restarted.restore([dict(stored, revision=0, final=False), stored, {"not": "stats"}])
    assert kept == [stored]
    assert restarted.alerted(START) == {"billing"}
    (acks,) = restarted.add(part(0, ["billing"]), lambda: None, 0, 200.0)  # read again after the restart
    assert isinstance(acks, list)


def test_revoked_partials_are_let_go() -> None:
    m = StatsMerger(2, wait_s=30)
    m.add(part(0, ["billing"]), lambda: None, 3, 100.0)
    assert m.waiting == 1 and m.revoke([3]) == 1 and m.waiting == 0 and m.due(1000.0) == []


def test_latency_buckets() -> None:
    assert [latency_bucket(x) for x in (12.4, 999.6, 1234.0, 12345.0)] == [12, 1000, 1230, 12300]
