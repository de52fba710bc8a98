"""The classify reader (pipeline/ingest/reader.py) in a group of two worker processes: the partitions are split,
every event is enriched exactly once, and a rolling restart of one worker re-reads nothing (commit before
revoke on the workers that hand partitions to the newcomer, drain and commit on the stopped one)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
import pytest

from pipeline.model.identity import IDENTITY
from tests.e2e.conftest import PARTITIONS, collect, produce
from tests.e2e.faults import assignment, wait_assigned

pytestmark = pytest.mark.e2e
RATE = 150.0  # events/s while the group changes: every rebalance happens with events in flight
N_EVENTS = 900


def events(uid: str, n: int) -> list[bytes]:
    now_ms = int(time.time() * 1000)
    return [orjson.dumps({"id": f"{uid}-{i}", "ts": now_ms, "text": f"my parcel {i} never arrived"}) for i in range(n)]


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)  # noida-db wedges a group on rejoin (brokers.md)
def test_two_workers_split_the_partitions_and_a_rolling_restart_duplicates_nothing(
    broker, topics, start_worker
) -> None:
    env = {"SLMSTREAM_MODEL__ENCODER": IDENTITY, "SLMSTREAM_BATCHING__LATE_POLICY": "process"}
    first = start_worker(**env)
    second = start_worker(**env)
    wait_assigned([first, second], topics.events, PARTITIONS, 60)
    split = [assignment(w, topics.events) for w in (first, second)]
    assert split[0] and split[1] and not split[0] & split[1], split  # each owns some, none owns one twice

    values = events(topics.uid, N_EVENTS)
    third_split: list[set[int] | None] = []

    async def produce_and_roll() -> None:
        """A rolling restart of `second` while events flow: its replacement joins first (partitions move from the
        two running workers to it: commit before revoke), then `second` stops gracefully (drain and commit)."""
        sending = asyncio.ensure_future(produce(broker.bootstrap, topics.events, values, rate=RATE))
        await collect(broker.bootstrap, [topics.enriched], {topics.enriched: N_EVENTS // 4}, 90, grace=0)
        third = await asyncio.to_thread(start_worker, **env)
        await asyncio.to_thread(wait_assigned, [first, second, third], topics.events, PARTITIONS, 60)
        await asyncio.to_thread(second.stop, 30)
        await asyncio.to_thread(wait_assigned, [first, third], topics.events, PARTITIONS, 60)
        third_split.append(assignment(third, topics.events))
        await sending

    asyncio.run(produce_and_roll())
    got = asyncio.run(collect(broker.bootstrap, [topics.enriched], {topics.enriched: N_EVENTS}, 120))
    ids = Counter(d["id"] for d in got[topics.enriched])
    expected = {orjson.loads(v)["id"] for v in values}
    missing = expected - set(ids)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    assert set(ids) == expected
    duplicated = sorted(i for i, c in ids.items() if c > 1)
    assert not duplicated, (
        f"{len(duplicated)} events enriched twice across a rolling restart, e.g. {duplicated[:5]}\n"
        + "\n".join(w.log_tail(20) for w in (first, second))
    )
    assert third_split and third_split[0], "the third worker got no partition"
