"""Overload, end to end on tansu: input at 3x what the pipeline can classify, then the load stops.

What must hold (README, Guarantees): memory stays bounded (at most `batching.queue_limit` events held, the
backlog waits in Kafka); every event gets its enriched record -- on time, or deferred to
`events.deferred` and classified later in the model's idle time (analysis.deferred=True) -- or a DLQ
record; results flagged on time really are within the budget; the backlog drains once the load stops.

Run: `pytest tests/e2e/test_overload.py -s` (CI: 3x for 10 s); `pytest -m soak -s` (3x for 60 s).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import PARTITIONS, Topics, worker_settings
from tests.e2e.faults import (
    OutputReader,
    RssSampler,
    StreamProducer,
    WorkerPool,
    explain_duplicates,
    log_events,
    metric,
    percentile,
    rss_mib,
    wait_assigned,
)

pytestmark = pytest.mark.e2e

PROBE_EVENTS = 640  # 20 full batches
# Growth allowed over the RSS measured after warm-up and the capacity probe. The worker may hold
# queue_limit events (a few KiB each with their Faust message objects) plus Faust's stream buffer
# (stream_buffer_maxsize=4096 per agent) and aiokafka's fetch buffers; 200 MiB is several times that, and
# far below what an unbounded queue of the whole 3x backlog would grow to in the 60 s soak.
RSS_GROWTH_MIB = 200.0


def _overload(broker, topics: Topics, tmp_path: Path, *, factor: float, seconds: float) -> None:
    batching = worker_settings().batching  # what the worker below runs with
    queue_limit, max_batch, budget_ms = batching.queue_limit, batching.max_batch, batching.budget_ms
    with WorkerPool(broker.url, topics, tmp_path) as pool, OutputReader(broker.bootstrap, topics) as reader:
        worker = pool.start()
        wait_assigned([worker], topics.events, PARTITIONS, 60)
        assert worker.proc is not None
        pid = worker.proc.pid

        # ---- capacity: a burst, all of it queued at once; how fast does it come out? ----
        probe = StreamProducer(broker.bootstrap, topics.events, f"{topics.uid}-probe", PROBE_EVENTS, 20000).start()
        probe.join(30)
        probe_done = reader.wait_done(probe.ids(), timeout=60, grace=0.5)
        assert probe_done is not None, "the capacity probe did not finish"
        capacity = PROBE_EVENTS / (probe_done - probe.started_at)
        rss_base = rss_mib(pid) or 0.0

        # ---- overload: factor x capacity for `seconds`, ts = send time ----
        rate = factor * capacity
        load = StreamProducer(broker.bootstrap, topics.events, topics.uid, int(rate * seconds), rate)
        with RssSampler(pid) as rss:
            load.start()
            load.join(seconds * 3 + 30)
            # Expected drain: what exceeded capacity, at capacity; generous margin (2 cores shared with the
            # broker and the test's own producer and reader).
            backlog_s = max(len(load.ids()) / capacity - seconds, 0.0)
            last = reader.wait_done(load.ids(), timeout=3 * backlog_s + 60)
            rss_after = rss_mib(pid) or 0.0
        assert worker.proc.poll() is None, f"worker died:\n{worker.log_tail()}"
        ids = load.ids()
        assert last is not None, (
            f"{len(set(ids) - reader.done_ids())}/{len(ids)} events not enriched {3 * backlog_s + 60:.0f}s after "
            f"the load stopped\n{worker.log_tail(20)}"
        )
        drain_s = last - load.finished_at
        finished_by_then = {
            r.id for r in reader.snapshot() if r.topic in ("enriched", "dlq") and r.seen <= load.finished_at
        }
        waiting = len(set(load.ids()) - finished_by_then)

        # ---- every event accounted for: enriched (directly or deferred) or DLQ ----
        counts = reader.final_counts()
        lost = sorted(set(ids) - set(counts))
        assert not lost, f"{len(lost)} events lost, e.g. {lost[:5]}"
        dup_ids = sorted(i for i in ids if counts[i] > 1)
        ours = set(ids)
        enriched = [r.doc for r in reader.snapshot() if r.topic == "enriched" and r.id in ours]
        dlq = sum(1 for r in reader.snapshot() if r.topic == "dlq" and r.id in ours)
        deferred = [d for d in enriched if d["analysis"]["deferred"]]
        on_time = [d for d in enriched if d["analysis"]["deadline_met"] and not d["analysis"]["deferred"]]
        late_direct = [d for d in enriched if not d["analysis"]["deadline_met"] and not d["analysis"]["deferred"]]
        latencies = [d["analysis"]["latency_ms"]["total"] for d in on_time]

        # ---- bounded memory: the scheduler's own count, and the process RSS ----
        held = [e["held"] for e in log_events(worker) if e.get("event") == "batch" and "held" in e]
        # The worker's own lag gauge (high watermark - committed, refreshed every 5 s) must come down to 0.
        lag_deadline = time.monotonic() + 20
        while True:
            lag = metric(worker, "slmstream_consumer_lag")
            if all(v == 0 for _, v in lag) or time.monotonic() > lag_deadline:
                break
            time.sleep(1)
        lag_zero_s = time.time() - last

        print(
            f"\n[{broker.engine}] overload: capacity {capacity:.0f} events/s (burst of {PROBE_EVENTS}); produced "
            f"{len(ids)} at {load.achieved_rate:.0f}/s ({load.achieved_rate / capacity:.1f}x) for "
            f"{load.finished_at - load.started_at:.1f}s\n"
            f"  RSS: {rss_base:.0f} MiB before, max {rss.max:.0f} MiB during ({len(rss.samples)} samples, every "
            f"0.5 s), {rss_after:.0f} MiB after; max held by the scheduler {max(held, default=0)} "
            f"(queue_limit {queue_limit})\n"
            f"  outcome: {len(on_time)} on time ({100 * len(on_time) / len(ids):.1f}%), {len(deferred)} deferred "
            f"({100 * len(deferred) / len(ids):.1f}%), {len(late_direct)} late without deferral, {dlq} DLQ, "
            f"{len(dup_ids)} duplicated ids\n"
            f"  on-time latency (event time -> result): p50 {percentile(latencies, 50):.0f} ms, "
            f"p99 {percentile(latencies, 99):.0f} ms, max {max(latencies, default=0):.0f} ms (budget {budget_ms:.0f})\n"
            f"  drain: {waiting} events not yet enriched when the load stopped, all enriched {drain_s:.1f}s later "
            f"({waiting / max(drain_s, 1e-9):.0f}/s); consumer lag gauge {sorted({v for _, v in lag})} "
            f"{lag_zero_s:.1f}s after the last result"
        )

        assert max(held, default=0) <= queue_limit + 4 * max_batch, "the scheduler held more than its limits"
        assert rss.max <= rss_base + RSS_GROWTH_MIB, f"RSS grew from {rss_base:.0f} to {rss.max:.0f} MiB"
        # A result flagged on time is within the budget (rounding: latency_ms has 2 decimals).
        over = [x for x in latencies if x > budget_ms + 0.01]
        assert not over, f"{len(over)} on-time results over the {budget_ms} ms budget: {sorted(over)[-5:]}"
        # The flag is honest: a main-lane result past its deadline says so.
        assert all(d["analysis"]["latency_ms"]["total"] > budget_ms - 0.01 for d in late_direct)
        # defer policy: an event the batcher sees would be late is deferred. One it expected to make it but
        # the model then took longer than its service-time estimate (2 cores shared with the broker, the
        # test's producer and reader) is delivered flagged late: allowed, but only a small share.
        assert len(late_direct) <= 0.10 * len(ids), f"{len(late_direct)} main-lane results missed the deadline"
        assert len(on_time) > 0 and len(deferred) > 0, "3x overload should give both on-time and deferred results"
        # No crash and no rebalance here: exactly one result per event.
        assert not dup_ids, f"{len(dup_ids)} duplicates:\n{explain_duplicates(reader, load, pool, dup_ids)}"
        assert drain_s <= 3 * backlog_s + 60
        assert lag and all(v == 0 for _, v in lag), f"consumer lag still {lag}"


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_overload_3x_stays_bounded_and_drains(broker, topics, tmp_path) -> None:
    """CI: 3x capacity for 10 s."""
    _overload(broker, topics, tmp_path, factor=3.0, seconds=10.0)


@pytest.mark.soak
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_overload_3x_soak(broker, topics, tmp_path) -> None:
    """Soak: 3x capacity for 60 s."""
    _overload(broker, topics, tmp_path, factor=3.0, seconds=60.0)
