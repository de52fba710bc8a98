"""Analytics with several workers in one group, on a real broker: one summary per key and window, one stats record
per window, one alert for a spike, through a SIGKILL of one worker and a graceful restart of another.

Three workers share 4 partitions of every topic. Events carry event times (`ts`) inside the window they are sent
in, for 8 keys (spread over every partition), so every expected (key, window) count and window total is known.
`grace_s` is longer than tansu takes to hand a SIGKILLed member's partitions to another worker (~11 s,
brokers.md) plus the time to classify its backlog: no event arrives after its window closed. After a crash
duplicates are allowed; the readers' rule (schemas: keep the highest (final, revision) per key and window)
must leave exactly the right records.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from pipeline.kafka_client import ensure_topics
from pipeline.worker_process import WorkerProcess
from schemas import load_schema
from tests.e2e.conftest import MODELS, PARTITIONS, ROOT, free_port, produce
from tests.e2e.test_summaries_e2e import samples

pytestmark = pytest.mark.e2e

WINDOW_S = 3
GRACE_S = 20  # > tansu's ~11 s to replace a SIGKILLed member, plus classifying what it left
PER_KEY = 3  # events per key per quiet window
# (windows, what happens to the workers in which window, the spiking window). "kill": SIGKILL the oldest
# worker still running 1.5 s into the window; "restart": stop the oldest gracefully and start a new one;
# "start": one more worker.
SHORT = (10, {2: "kill", 5: "restart"}, 8)
# The soak's changes are 30 s or more apart: on tansu 0.6 a group whose leader leaves (graceful stop) while another
# rebalance is under way can stay without a leader, every member re-joining forever (seen here, not ours to fix).
SOAK = (48, {3: "kill", 13: "restart", 23: "kill", 26: "start", 36: "restart"}, 44)
SPIKE = 36


def keys_covering(partitions: int, per_partition: int) -> list[str]:
    """Keys that the producers' partitioner (murmur2, as Kafka's) spreads evenly over every partition."""
    partitioner = DefaultPartitioner()
    by_partition: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for i in range(1000):
        key = f"k{i}"
        p = partitioner(key.encode(), list(range(partitions)), list(range(partitions)))
        if len(by_partition[p]) < per_partition:
            by_partition[p].append(key)
    return [k for p in sorted(by_partition) for k in by_partition[p]]


KEYS = keys_covering(PARTITIONS, 2)  # two per partition of the by-key topic: every worker has keys


def keep_highest(records: list[dict], key) -> dict:
    """The readers' rule (schemas/summary.schema.json, stats.schema.json)."""
    best: dict = {}
    for r in records:
        k = key(r)
        if k not in best or (r["final"], r["revision"]) > (best[k]["final"], best[k]["revision"]):
            best[k] = r
    return best


@pytest.mark.parametrize(
    "plan", [pytest.param(SHORT, id="short"), pytest.param(SOAK, id="soak", marks=pytest.mark.soak)]
)
def test_three_workers_a_kill_and_a_restart_give_one_final_record_per_window(
    broker, topics, tmp_path: Path, plan: tuple[int, dict[int, str], int]
) -> None:
    windows, actions, spike_in = plan
    if broker.engine != "tansu":
        pytest.skip("noida-db keeps a group stuck after a SIGKILL until the broker restarts (brokers.md)")
    env = {
        "SLMSTREAM_CONFIG": str(ROOT / "config" / "slmstream.yaml"),
        "SLMSTREAM_BROKER": broker.url,
        "SLMSTREAM_MODEL__CACHE_DIR": str(MODELS),
        "SLMSTREAM_LOG_FORMAT": "json",
        **topics.env(),
        "SLMSTREAM_SUMMARIES__ENABLED": "true",
        "SLMSTREAM_SUMMARIES__WINDOW_S": str(WINDOW_S),
        "SLMSTREAM_SUMMARIES__GRACE_S": str(GRACE_S),
        "SLMSTREAM_SUMMARIES__STATS_WAIT_S": "90",
        "SLMSTREAM_SUMMARIES__MIN_EVENTS_ABSTRACTIVE": "1000",  # extractive: 3 workers on 2 cores
        "SLMSTREAM_ALERTS__ENABLED": "true",
        "SLMSTREAM_ALERTS__MIN_BASELINE_WINDOWS": "3",
        "SLMSTREAM_ALERTS__MIN_COUNT": "15",
        "SLMSTREAM_ALERTS__Z": "off",
    }
    out = [topics.summaries, topics.stats, topics.alerts]
    summaries_t, stats_t, alerts_t = out
    asyncio.run(ensure_topics(broker.bootstrap, out, PARTITIONS))
    workers: list[WorkerProcess] = []

    def new_worker() -> WorkerProcess:
        n = len(workers)
        w = WorkerProcess(env, tmp_path / f"worker-{n}.log", tmp_path / f"worker-{n}-data", free_port())
        workers.append(w)
        w.start()
        return w

    try:
        for w in [new_worker() for _ in range(3)]:
            w.wait_ready(120)
        texts = samples()
        quiet_labels = sorted(label for label in texts if label != "account_access")
        expected: Counter[tuple[str, int]] = Counter()
        per_window: Counter[int] = Counter()
        ids: set[str] = set()
        restarted: list[threading.Thread] = []

        def event(i: int, key: str, ts_s: float, text: str) -> bytes:
            ident = f"{topics.uid}-{i:05d}"
            ids.add(ident)
            expected[(key, int(ts_s // WINDOW_S * WINDOW_S * 1000))] += 1
            per_window[int(ts_s // WINDOW_S * WINDOW_S * 1000)] += 1
            return orjson.dumps({"id": ident, "text": text, "ts": int(ts_s * 1000), "key": key, "source": "chat"})

        async def scenario() -> None:
            start = (int(time.time() // WINDOW_S) + 1) * WINDOW_S
            i = 0
            for w in range(windows):
                values = []
                for key in KEYS:
                    for j in range(PER_KEY):
                        label = "account_access" if j == 0 and key == KEYS[w % len(KEYS)] else None
                        label = label or quiet_labels[(i + j) % len(quiet_labels)]
                        values.append(event(i, key, start + 0.1, texts[label][i % len(texts[label])]))
                        i += 1
                if w == spike_in:
                    for j in range(SPIKE):
                        values.append(event(i, KEYS[j % len(KEYS)], start + 0.2, texts["account_access"][j]))
                        i += 1
                delay = start + 0.1 - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await produce(broker.bootstrap, topics.events, values)
                action = actions.get(w)
                running = [x for x in workers if x.proc is not None and x.proc.poll() is None]
                if action == "kill":
                    await asyncio.sleep(1.4)
                    running[0].kill()
                if action == "restart":
                    assert running[0].stop(30) is not None
                if action in ("restart", "start"):
                    t = threading.Thread(target=lambda: new_worker().wait_ready(120))
                    t.start()
                    restarted.append(t)
                start += WINDOW_S

        t0 = time.monotonic()
        asyncio.run(scenario())
        for t in restarted:
            t.join()

        def done(got: dict[str, list[dict]]) -> bool:
            # The spike's alert is stored after its window's stats record: its explanation waits for the
            # generator (seconds on a loaded machine, up to budget_s and more), so it is waited for too.
            s = keep_highest(got[summaries_t], lambda r: (r["key"], r["window"]["start_ms"]))
            st = keep_highest(got[stats_t], lambda r: r["window"]["start_ms"])
            spike_start = sorted(per_window)[spike_in]
            return (
                all(k in s and s[k]["count"] == n for k, n in expected.items())
                and all(w in st and st[w]["final"] and st[w]["events"] == n for w, n in per_window.items())
                and any(a["window"]["start_ms"] == spike_start for a in got[alerts_t])
            )

        got = asyncio.run(collect_until(broker.bootstrap, [summaries_t, stats_t, alerts_t, topics.enriched], done))
        elapsed = time.monotonic() - t0
    finally:
        for w in workers:
            w.stop(20)
            w.kill()

    enriched_ids = {r["id"] for r in got[topics.enriched]}
    assert enriched_ids == ids, f"{len(ids - enriched_ids)} events never enriched"
    summaries = got[summaries_t]
    for r in summaries:
        jsonschema.validate(r, load_schema("summary"))
    kept = keep_highest(summaries, lambda r: (r["key"], r["window"]["start_ms"], r["window"]["part"]))
    assert {(k, w) for k, w, _ in kept} == set(expected), "one summary per key and window, none missing or extra"
    assert {(k, w): r["count"] for (k, w, _), r in kept.items()} == dict(expected)
    assert sum(r["count"] for r in kept.values()) == len(ids), "every enriched event in exactly one summary"
    stats = got[stats_t]
    for r in stats:
        jsonschema.validate(r, load_schema("stats"))
    final = keep_highest(stats, lambda r: r["window"]["start_ms"])
    assert set(final) == set(per_window), "one stats record per window, none missing or extra"
    assert {w: (r["events"], r["final"], r["partitions"]) for w, r in final.items()} == {
        w: (n, True, PARTITIONS) for w, n in per_window.items()
    }
    alerts = got[alerts_t]
    assert len(alerts) == 1, alerts
    (alert,) = alerts
    spike_start = sorted(per_window)[spike_in]
    assert alert["label"] == "account_access" and alert["window"]["start_ms"] == spike_start
    assert final[spike_start]["spikes"] == ["account_access"]
    # One merger sees every window: the baseline is the windows before the spike (those merged by then; the
    # restart makes several close together), not one worker's share of them.
    assert alert["baseline"]["windows"] >= min(spike_in, 10) - 2, alert
    dups = len(summaries) - len(kept), len(stats) - len(final)
    print(
        f"[{broker.engine}] {len(ids)} events, {len(kept)} summaries, {len(final)} stats windows; duplicates "
        f"(summaries, stats) {dups}; {elapsed:.0f}s"
    )


async def read_all(bootstrap: str, names: list[str], idle_s: float = 1.0) -> dict[str, list[dict]]:
    """Every record of the topics so far: every partition read up to its end offset, then until nothing came
    for `idle_s` (tansu reports the start of a partition's last batch as its end: brokers.md)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=40)
    await consumer.start()
    got: dict[str, list[dict]] = {t: [] for t in names}
    try:
        tps = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        last = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                got[tp.topic].extend(orjson.loads(r.value) for r in records)
                last = time.monotonic()
            if time.monotonic() - last >= idle_s and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                return got
    finally:
        await consumer.stop()


async def collect_until(bootstrap: str, names: list[str], done, timeout: float = 120.0) -> dict[str, list[dict]]:
    """Read the topics until `done(records)`, then once more 3 s later (late duplicates are seen too)."""
    deadline = time.monotonic() + timeout
    got = await read_all(bootstrap, names)
    while not done(got) and time.monotonic() < deadline:
        await asyncio.sleep(2)
        got = await read_all(bootstrap, names)
    await asyncio.sleep(3)
    return await read_all(bootstrap, names)
