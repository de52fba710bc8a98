"""pipeline/dashboard/live.py: a delivered batch of enriched events counts as each of its events observed alone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.dashboard.live import LiveState
from pipeline.output.observers import Delivered

T0 = 1_700_000_000.0
batches = st.lists(
    st.tuples(
        st.floats(0.0, 200.0),  # seconds after T0 (may step back)
        st.lists(
            st.tuples(st.sampled_from(["a", "b", "unknown"]), st.one_of(st.floats(-1e6, 1e6), st.just(float("nan")))),
            max_size=8,
        ),
    ),
    max_size=12,
)


@given(batches)
def test_a_batch_is_its_events_one_by_one(sequence: list[tuple[float, list[tuple[str, float]]]]) -> None:
    batched, single = LiveState(), LiveState()
    for offset, events in sequence:
        now = T0 + offset
        labels = [label for label, _ in events]
        latencies = [seconds for _, seconds in events]
        batched.on_delivered(Delivered("enriched", len(events), now, labels=labels, latencies_s=latencies))
        for label, seconds in events:
            single.observe_enriched(label, seconds * 1000.0, now)
    end = T0 + 200.0
    assert batched.snapshot(end) == single.snapshot(end)
    assert batched.events_total == single.events_total
