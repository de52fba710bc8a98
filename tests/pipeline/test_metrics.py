"""pipeline/metrics.py: a batch observed at once counts exactly as each value observed alone."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from pipeline.metrics import LATENCY_BUCKETS, observe_many


def samples(h: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{s.labels.get('le', '')}": s.value for m in h.collect() for s in m.samples if "created" not in s.name
    }


@given(st.lists(st.floats(min_value=0.0, max_value=20.0) | st.sampled_from(LATENCY_BUCKETS), max_size=60))
def test_observe_many_equals_observing_each(values: list[float]) -> None:
    one, many = (Histogram("h", "h", registry=CollectorRegistry(), buckets=LATENCY_BUCKETS) for _ in range(2))
    for v in values:
        one.observe(v)
    observe_many(many, values)
    expected, got = samples(one), samples(many)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-9), name
