"""Prometheus metrics of the worker, served at /metrics on its web port.

One registry of our own (not the process default) so tests can build several apps in one process. The loops
(scheduler, window analytics) do not touch these: they report to `MetricsObserver`, which the worker's
assembly passes to them as an observer (pipeline/output/observers.py), once per batch.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pipeline.output.observers import BaseObserver, Delivered, ModelBatch

REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds buckets from 1 ms to 10 s: model calls are milliseconds, a deferred event may take seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1, 2.5, 5, 10)

EVENTS_IN = Counter("slmstream_events_in", "Messages read from an input topic", ["topic"], registry=REGISTRY)
EVENTS_OUT = Counter(
    "slmstream_events_out", "Records written, by outcome (enriched, dlq, deferred)", ["outcome"], registry=REGISTRY
)
CLASSIFIED = Counter(
    "slmstream_classified",
    "Events classified and stored, by language (lid.176 code, `und` when unsure) and label",
    ["lang", "label"],
    registry=REGISTRY,
)
DLQ = Counter("slmstream_dlq", "Messages sent to the DLQ, by reason", ["reason"], registry=REGISTRY)
DEADLINE_MISSES = Counter(
    "slmstream_deadline_misses", "Events whose result missed event time + budget", ["policy"], registry=REGISTRY
)
BATCH_SIZE = Histogram(
    "slmstream_batch_size",
    "Events per model batch",
    ["model"],
    registry=REGISTRY,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
QUEUE_WAIT = Histogram(
    "slmstream_queue_wait_seconds",
    "From arrival at the worker to the start of the event's batch",
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
MODEL_TIME = Histogram(
    "slmstream_model_seconds", "Model time per batch", ["model"], registry=REGISTRY, buckets=LATENCY_BUCKETS
)
END_TO_END = Histogram(
    "slmstream_end_to_end_seconds",
    "From event time to the enriched record being acknowledged",
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
QUEUE_DEPTH = Gauge("slmstream_queue_depth", "Events held by the worker (waiting or in flight)", registry=REGISTRY)
CONSUMER_LAG = Gauge(
    "slmstream_consumer_lag", "High watermark minus committed offset", ["topic", "partition"], registry=REGISTRY
)

# Window analytics (pipeline/analytics/runner.py)
SUMMARIES = Counter("slmstream_summaries", "Window summaries written, by method", ["method"], registry=REGISTRY)
SUMMARY_LATENCY = Histogram(
    "slmstream_summary_latency_seconds",
    "From a window's close to its summary being acknowledged",
    registry=REGISTRY,
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120),
)
ALERTS = Counter("slmstream_alerts", "Spike alerts written, by label", ["label"], registry=REGISTRY)
ANALYTICS_HELD = Gauge(
    "slmstream_analytics_held", "Enriched records held in windows or awaiting their summary", registry=REGISTRY
)

# Reference facts (pipeline/facts): the table's size and what the join found, updated per batch.
FACTS_ENTRIES = Gauge("slmstream_facts_entries", "Entities in the facts table", registry=REGISTRY)
FACTS_EVICTIONS = Counter(
    "slmstream_facts_evictions",
    "Entities dropped from the facts table at its bound (facts.max_entries)",
    registry=REGISTRY,
)
FACTS_REJECTED = Counter(
    "slmstream_facts_rejected", "Records of the reference topic rejected, by reason", ["reason"], registry=REGISTRY
)
FACTS_LOOKUPS = Counter(
    "slmstream_facts_lookups", "Events joined to the facts table, by result (hit, miss)", ["result"], registry=REGISTRY
)


def observe_facts_lookups(hits: int, misses: int) -> None:
    """One batch's joins (pipeline/facts/join.py): two counter calls per batch, none per event."""
    if hits:
        FACTS_LOOKUPS.labels("hit").inc(hits)
    if misses:
        FACTS_LOOKUPS.labels("miss").inc(misses)


# Learning from analysts (pipeline/learning)
FEEDBACK = Counter(
    "slmstream_feedback",
    "Feedback records handled: accepted (by kind: id, text, label) or rejected (by DLQ reason)",
    ["outcome", "reason"],
    registry=REGISTRY,
)
HEAD_INFO = Gauge(
    "slmstream_head_info",
    "The learned head the classifier uses: 1 for its version (zero-shot: none)",
    ["version"],
    registry=REGISTRY,
)
HEAD_SWAPS = Counter(
    "slmstream_head_swaps", "Taxonomy swaps, by how (trained, restored, labels)", ["how"], registry=REGISTRY
)
LEARNED_EXAMPLES = Gauge(
    "slmstream_learned_examples", "Training examples per label in the taxonomy in use", ["label"], registry=REGISTRY
)


def set_learning_state(version: str | None, examples_per_label: dict[str, int], how: str) -> None:
    """The taxonomy swapped in: its version (the only series of HEAD_INFO) and its examples per label."""
    HEAD_INFO.clear()
    HEAD_INFO.labels(version or "none").set(1)
    HEAD_SWAPS.labels(how).inc()
    for label, n in examples_per_label.items():
        LEARNED_EXAMPLES.labels(label).set(n)


def render() -> bytes:
    return generate_latest(REGISTRY)


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """`histogram.observe(v)` for each of `values`, with one lock round per bucket touched instead of two per
    value: the loops observe whole batches (per-event Prometheus calls cost ~1 µs each on the hot path).
    prometheus-client has no bulk observe; this adds to the same per-bucket counters and sum `observe` does
    (private attributes of prometheus-client 0.x's Histogram; tests/pipeline/test_metrics.py compares)."""
    if not values:
        return
    h: Any = histogram
    bounds: list[float] = h._upper_bounds  # noqa: SLF001  sorted, the last is +Inf
    counts = [0] * len(bounds)
    for v in values:
        counts[bisect_left(bounds, v)] += 1  # the first bound >= v: the bucket observe() picks
    for i, n in enumerate(counts):
        if n:
            h._buckets[i].inc(n)  # noqa: SLF001
    h._sum.inc(sum(values))  # noqa: SLF001


class MetricsObserver(BaseObserver):
    """Feeds the metrics above from the loops' per-batch reports."""

    def on_delivered(self, batch: Delivered) -> None:
        if batch.outcome in ("enriched", "dlq", "deferred"):
            EVENTS_OUT.labels(batch.outcome).inc(batch.size)
        if batch.outcome == "enriched":
            observe_many(END_TO_END, batch.latencies_s)
            if batch.langs:  # counted per batch: one inc per (language, label) present
                for (lang, label), n in Tally(zip(batch.langs, batch.labels, strict=True)).items():
                    CLASSIFIED.labels(lang, label).inc(n)
        elif batch.outcome == "dlq":
            for reason, n in Tally(batch.reasons).items():
                DLQ.labels(reason).inc(n)
        elif batch.outcome == "summary":
            for record in batch.records:
                SUMMARIES.labels(str(record.get("method"))).inc()
            for seconds in batch.latencies_s:
                SUMMARY_LATENCY.observe(seconds)
        elif batch.outcome == "alert":
            for record in batch.records:
                ALERTS.labels(str(record.get("label"))).inc()

    def on_model_batch(self, batch: ModelBatch) -> None:
        if batch.parts:  # one sub-batch per encoder (routed by language): each under its own name
            for model, (n, seconds) in batch.parts.items():
                BATCH_SIZE.labels(model).observe(n)
                MODEL_TIME.labels(model).observe(seconds)
        else:
            BATCH_SIZE.labels(batch.model).observe(batch.size)
            MODEL_TIME.labels(batch.model).observe(batch.model_s)
        observe_many(QUEUE_WAIT, batch.queue_waits_s)
        if batch.deadline_misses:
            DEADLINE_MISSES.labels(batch.late_policy).inc(batch.deadline_misses)

    def on_held(self, loop: Literal["classify", "analytics"], held: int) -> None:
        (QUEUE_DEPTH if loop == "classify" else ANALYTICS_HELD).set(held)
