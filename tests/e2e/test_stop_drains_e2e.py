"""A graceful stop (SIGTERM) under back-pressure, end to end on tansu: nothing lost, offsets committed.

README (Guarantees): "A graceful stop (SIGTERM) drains and commits: no duplicates"; an input offset is committed
only after the broker acknowledged the record it produced. Here the worker is stopped at its worst moment: a
small `batching.queue_limit` full, a backlog waiting in Kafka, events being deferred, and a batch of the deferred
lane (events read back from `events.deferred`) running.

Checked on the broker's log, read afresh after the stop:
* at-least-once: every input below the group's committed offset has its enriched or deferred record, and every
  deferred record below the committed offset of `events.deferred` has its enriched record;
* drained: no input at or past the committed offset has an output yet (it would be enriched a second time by the
  next worker);
then a second worker finishes the backlog and is stopped the same way: the committed offsets equal the end
offsets of `events` and `events.deferred`, and every event has exactly one enriched record.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.ingest.reader import classify_group
from tests.e2e.conftest import PARTITIONS, Topics, worker_settings
from tests.e2e.faults import (
    OutputReader,
    StreamProducer,
    WorkerPool,
    log_events,
    metric,
    read_outputs,
    wait_assigned,
)

pytestmark = pytest.mark.e2e

QUEUE_LIMIT = 64  # small: the queue is full for most of the burst
ENV = {"SLMSTREAM_BATCHING__QUEUE_LIMIT": str(QUEUE_LIMIT)}
STALE = 300  # late on arrival: deferred at once
BURST = 1200


def committed_offsets(bootstrap: str, group: str, topics: list[str]) -> dict[str, int]:
    """The group's committed offsets (0 where none), read by a consumer of the group that does not join it
    (tansu answers the admin client's OffsetFetch in a form aiokafka cannot parse)."""

    async def get() -> dict[str, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            out = {}
            for t in topics:
                for p in range(PARTITIONS):
                    out[f"{t}/{p}"] = await consumer.committed(TopicPartition(t, p)) or 0
            return out
        finally:
            await consumer.stop()

    return asyncio.run(get())


def deferred_batches(w) -> int:
    return sum(1 for e in log_events(w) if e.get("event") == "batch" and e.get("lane") == "deferred")


def stop_checks(
    bootstrap: str, topics: Topics, where: dict[str, tuple[int, int]], group: str
) -> tuple[dict[str, int], list[str]]:
    """After a graceful stop: the committed offsets, and what breaks at-least-once or the drain (empty: fine)."""
    committed = committed_offsets(bootstrap, group, [topics.events, topics.deferred])
    now = read_outputs(bootstrap, topics)
    enriched = {o.id for o in now if o.topic == "enriched"}
    deferred = [o for o in now if o.topic == "deferred"]
    deferred_ids = {o.id for o in deferred}
    problems = []
    for event_id, (p, off) in where.items():
        c = committed.get(f"{topics.events}/{p}", 0)
        has_output = event_id in enriched or event_id in deferred_ids
        if off < c and not has_output:
            problems.append(f"{event_id} (events p{p}@{off}) committed (offset {c}) without an output record")
        if off >= c and has_output:
            problems.append(f"{event_id} (events p{p}@{off}) has an output but is not committed (offset {c})")
    for o in deferred:
        c = committed.get(f"{topics.deferred}/{o.partition}", 0)
        if o.offset < c and o.id not in enriched:
            problems.append(f"{o.id} (deferred p{o.partition}@{o.offset}) committed (offset {c}), never enriched")
    # An input is deferred at most once, and a deferred record at or past the committed offset must not be
    # enriched yet (its enriched record would come again from the next worker).
    for o in deferred:
        c = committed.get(f"{topics.deferred}/{o.partition}", 0)
        if o.offset >= c and any(r.id == o.id and r.doc and r.doc["analysis"]["deferred"] for r in now):
            problems.append(f"{o.id} (deferred p{o.partition}@{o.offset}) enriched but not committed (offset {c})")
    return committed, problems


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_sigterm_with_a_full_queue_and_a_deferred_batch_in_flight(broker, topics, tmp_path: Path) -> None:
    batching = worker_settings(**ENV).batching
    assert batching.queue_limit == QUEUE_LIMIT and batching.late_policy == "defer"
    group = classify_group(topics.env()["SLMSTREAM_APP_ID"])  # the classify reader's consumer group
    with WorkerPool(broker.url, topics, tmp_path, **ENV) as pool, OutputReader(broker.bootstrap, topics) as reader:
        first = pool.start()
        wait_assigned([first], topics.events, PARTITIONS, 60)

        # 1. Events a minute old: late on arrival, all deferred at once; they come back from events.deferred and
        #    keep the deferred lane busy (it runs whenever the main lane has nothing to do).
        stale = StreamProducer(broker.bootstrap, topics.events, f"{topics.uid}-a", n=STALE, rate=5000, age_s=60)
        stale.start().join(60)
        deadline = time.monotonic() + 60
        while deferred_batches(first) == 0:
            assert time.monotonic() < deadline, f"no deferred batch in 60 s:\n{first.log_tail()}"
            time.sleep(0.05)
        # 2. A burst far above capacity on top: the queue fills while a deferred batch runs, the rest waits in
        #    Kafka. SIGTERM as soon as the worker has output for some of it.
        burst = StreamProducer(broker.bootstrap, topics.events, f"{topics.uid}-b", n=BURST, rate=2000).start()
        deadline = time.monotonic() + 60
        while not any(r.id and r.id.startswith(burst.tag) for r in reader.snapshot()):
            assert time.monotonic() < deadline, f"nothing of the burst done in 60 s:\n{first.log_tail()}"
            time.sleep(0.02)
        depth = sum(v for _, v in metric(first, "slmstream_queue_depth"))
        snap = reader.snapshot()
        deferred_written = sum(r.topic == "deferred" for r in snap)
        deferred_done = sum(bool(r.topic == "enriched" and r.doc and r.doc["analysis"]["deferred"]) for r in snap)

        t0 = time.monotonic()
        code = first.stop(30)
        stop_s = time.monotonic() - t0
        assert stop_s < 30, f"graceful stop took {stop_s:.1f}s (SIGKILLed):\n{first.log_tail()}"
        burst.join(60)
        where = stale.where | burst.where
        ids = list(where)
        # The premise: deferred events waiting, and a backlog beyond the queue when the SIGTERM came.
        outputs = {r.id for r in snap if r.topic in ("enriched", "deferred")}
        backlog = len(set(ids) - outputs)
        assert backlog > QUEUE_LIMIT, f"only {backlog} events had no output at the stop: no backlog"
        assert deferred_written > deferred_done, "no deferred event was waiting at the stop"

        committed, problems = stop_checks(broker.bootstrap, topics, where, group)
        assert not problems, f"after the first stop (exit {code}, {stop_s:.1f}s): {len(problems)} problems:\n" + (
            "\n".join(problems[:20]) + f"\n{first.log_tail(40)}"
        )

        # A second worker finishes the work; stopped the same way, it leaves everything committed.
        second = pool.start()
        last = reader.wait_done(ids, timeout=180)
        assert last is not None, f"{len(set(ids) - reader.done_ids())} events never enriched:\n{second.log_tail()}"
        assert second.stop(30) is not None
        final, problems = stop_checks(broker.bootstrap, topics, where, group)
        assert not problems, "after the second stop:\n" + "\n".join(problems[:20])
        # The end of each partition's log: its last record's offset + 1 (tansu's ListOffsets can answer less).
        ends = dict.fromkeys(final, 0)
        for p, off in where.values():
            ends[f"{topics.events}/{p}"] = max(ends[f"{topics.events}/{p}"], off + 1)
        for o in read_outputs(broker.bootstrap, topics):
            if o.topic == "deferred":
                ends[f"{topics.deferred}/{o.partition}"] = max(ends[f"{topics.deferred}/{o.partition}"], o.offset + 1)
        assert final == ends, f"committed {final} != log ends {ends}"

        counts = reader.final_counts()
        dup = sorted(i for i in ids if counts[i] > 1)
        assert not dup, f"{len(dup)} events enriched twice after graceful stops, e.g. {dup[:5]}"
        assert all(counts[i] == 1 for i in ids)
        assert not any(r.topic == "dlq" for r in reader.snapshot())
        print(
            f"\n[{broker.engine}] SIGTERM under back-pressure: {len(ids)} events; at the stop {backlog} without "
            f"output, queue depth {depth:.0f} (queue_limit {QUEUE_LIMIT}), {deferred_written} deferred of which "
            f"{deferred_done} done; stop {stop_s:.1f}s (exit {code}); committed then "
            f"{sum(v for k, v in committed.items() if k.startswith(topics.events + '/'))} inputs; log ends {ends}"
        )
