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


def test_classified_events_are_counted_by_language_and_label_per_batch() -> None:
    from pipeline.metrics import REGISTRY, MetricsObserver
    from pipeline.output.observers import Delivered

    def count(lang: str, label: str) -> float:
        return REGISTRY.get_sample_value("slmstream_classified_total", {"lang": lang, "label": label}) or 0.0

    before = {k: count(*k) for k in [("de", "billing"), ("zh", "billing"), ("de", "shipping")]}
    batch = Delivered(
        "enriched", 4, 0.0, labels=["billing", "billing", "shipping", "billing"], langs=["de", "zh", "de", "de"]
    )
    MetricsObserver().on_delivered(batch)
    assert count("de", "billing") - before[("de", "billing")] == 2
    assert count("zh", "billing") - before[("zh", "billing")] == 1
    assert count("de", "shipping") - before[("de", "shipping")] == 1
    # no language ID (no langs): nothing counted by language
    MetricsObserver().on_delivered(Delivered("enriched", 1, 0.0, labels=["billing"]))
    assert count("de", "billing") - before[("de", "billing")] == 2


def test_a_routed_batch_is_timed_per_encoder() -> None:
    from pipeline.metrics import REGISTRY, MetricsObserver
    from pipeline.output.observers import ModelBatch

    def count(model: str) -> float:
        return REGISTRY.get_sample_value("slmstream_batch_size_count", {"model": model}) or 0.0

    def total(model: str) -> float:
        return REGISTRY.get_sample_value("slmstream_batch_size_sum", {"model": model}) or 0.0

    before = {m: (count(m), total(m)) for m in ("enc-a", "enc-b", "router")}
    parts = {"enc-a": (5, 0.01), "enc-b": (3, 0.02)}
    MetricsObserver().on_model_batch(ModelBatch("router", 8, 0.03, [0.0] * 8, 0, "defer", parts))
    assert (count("enc-a") - before["enc-a"][0], total("enc-a") - before["enc-a"][1]) == (1, 5)
    assert (count("enc-b") - before["enc-b"][0], total("enc-b") - before["enc-b"][1]) == (1, 3)
    assert count("router") == before["router"][0]  # the batch is counted under its encoders only
