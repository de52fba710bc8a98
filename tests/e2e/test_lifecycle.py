"""A graceful stop (SIGTERM) while work is in the model: the worker finishes it, the broker has every result,
and the group's committed offsets reach the end of the input topic (pipeline/runtime.py's lifecycle).

The model is made slow for these events only (the test-only SLMTEST_MODEL_SLOW_TOKEN hook in
pipeline/model/faults.py): every model call holding one sleeps on the model thread, so at the signal the
work is still in flight.

- classify path: every event waits in the batcher or sits in the model at the signal;
- analytics path: a window's extractive summary sits in the (slow) encoder at the signal. Faust does not wait
  for records held by windows (agents/analyze.py), so only the runtime's drain on stop gets that summary out
  and its records acked before the final commit.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from pipeline.ingest.reader import classify_group
from tests.e2e.conftest import PARTITIONS, collect, produce
from tests.e2e.faults import metric

pytestmark = pytest.mark.e2e

SLOW_TOKEN = "slow-lifecycle-token"
SLOW_S = 2.0
N_EVENTS = 40


def events(uid: str) -> list[bytes]:
    now_ms = int(time.time() * 1000)
    return [
        orjson.dumps({"id": f"{uid}-{i}", "ts": now_ms, "text": f"my card was charged twice {SLOW_TOKEN} {i}"})
        for i in range(N_EVENTS)
    ]


def committed_and_end(
    bootstrap: str, group: str, topic: str, n_records: int = N_EVENTS
) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offset of each partition of `topic` (0: none), and each partition's end: the
    offset after its last record, read from the records themselves (tansu's ListOffsets does not count records
    the way Kafka does)."""

    async def get() -> tuple[dict[int, int], dict[int, int]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        await consumer.start()  # assigned, not subscribed: it never joins the group, only reads its offsets
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            committed = {tp.partition: (await consumer.committed(tp)) or 0 for tp in tps}
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = dict.fromkeys(range(PARTITIONS), 0)
            seen, deadline = 0, time.monotonic() + 20
            while seen < n_records and time.monotonic() < deadline:
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    seen += len(records)
                    ends[tp.partition] = max(ends[tp.partition], records[-1].offset + 1)
        finally:
            await consumer.stop()
        return committed, ends

    return asyncio.run(get())


def total(w, name: str) -> float:
    return sum(v for _, v in metric(w, name))


def held_and_read(w) -> tuple[float, float]:
    return total(w, "slmstream_queue_depth"), total(w, "slmstream_events_in_total")


def test_sigterm_mid_batch_delivers_and_commits_everything(broker, topics, start_worker) -> None:
    worker = start_worker(
        SLMTEST_MODEL_SLOW_TOKEN=SLOW_TOKEN,
        SLMTEST_MODEL_SLOW_S=str(SLOW_S),
        SLMSTREAM_BATCHING__LATE_POLICY="process",  # slow batches are late: still enrich every event
    )
    values = events(topics.uid)
    asyncio.run(produce(broker.bootstrap, topics.events, values))

    deadline = time.monotonic() + 30
    depth, read = held_and_read(worker)
    while (read < N_EVENTS or depth < N_EVENTS) and time.monotonic() < deadline:
        time.sleep(0.05)
        depth, read = held_and_read(worker)
    # Every event read and none delivered yet: all of them wait in the batcher or sit in the slow model.
    assert (read, depth) == (N_EVENTS, N_EVENTS), f"read {read}, held {depth}: the stop would not be mid-batch"

    t0 = time.monotonic()
    rc = worker.stop(60)
    stop_s = time.monotonic() - t0
    assert rc == 0, f"worker exited with {rc} after {stop_s:.1f}s:\n{worker.log_tail()}"

    got = asyncio.run(collect(broker.bootstrap, [topics.enriched], {topics.enriched: N_EVENTS}, 20, grace=1))
    ids = {d["id"] for d in got[topics.enriched]}
    want = {orjson.loads(v)["id"] for v in values}
    assert ids == want, f"{len(want - ids)} in-flight events have no result after the stop:\n{worker.log_tail()}"

    committed, ends = committed_and_end(broker.bootstrap, classify_group(f"e2e-{topics.uid}"), topics.events)
    assert committed == ends, f"committed offsets {committed}, end offsets {ends}"
    print(f"[{broker.engine}] graceful stop mid-batch took {stop_s:.1f}s")


WINDOW_EVENTS = 10


def test_sigterm_mid_summary_delivers_it_and_commits_its_records(broker, topics, start_worker) -> None:
    worker = start_worker(
        SLMTEST_MODEL_SLOW_TOKEN=SLOW_TOKEN,
        SLMTEST_MODEL_SLOW_S=str(SLOW_S),
        SLMSTREAM_BATCHING__LATE_POLICY="process",
        SLMSTREAM_SUMMARIES__ENABLED="true",
        SLMSTREAM_SUMMARIES__MAX_EVENTS=str(WINDOW_EVENTS),  # the window closes as its last record arrives
        SLMSTREAM_SUMMARIES__MIN_EVENTS_ABSTRACTIVE="1000",  # extractive: the summary runs in the slow encoder
    )
    now_ms = int(time.time() * 1000)
    values = [
        orjson.dumps({"id": f"{topics.uid}-w{i}", "ts": now_ms, "text": f"parcel never arrived {SLOW_TOKEN} {i}"})
        for i in range(WINDOW_EVENTS)
    ]
    asyncio.run(produce(broker.bootstrap, topics.events, values))

    # Every enriched record is in the window, the window has closed, and its summary is not out yet: the
    # extractive summary is waiting for (or inside) the slow encoder.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        held = total(worker, "slmstream_analytics_held")
        if held == WINDOW_EVENTS:
            break
        time.sleep(0.05)
    assert held == WINDOW_EVENTS, f"{held} records held by the window:\n{worker.log_tail()}"
    assert total(worker, "slmstream_summaries_total") == 0, "the summary was out before the stop"

    rc = worker.stop(60)
    assert rc == 0, f"worker exited with {rc}:\n{worker.log_tail()}"

    got = asyncio.run(collect(broker.bootstrap, [topics.summaries], {topics.summaries: 1}, 20, grace=1))
    summaries = got[topics.summaries]
    assert [(s["count"], s["method"]) for s in summaries] == [(WINDOW_EVENTS, "extractive")], summaries
    committed, ends = committed_and_end(broker.bootstrap, f"e2e-{topics.uid}", topics.enriched, n_records=WINDOW_EVENTS)
    assert committed == ends, f"enriched topic: committed offsets {committed}, end offsets {ends}"
