"""Reliability under faults, end to end on real brokers and worker processes: nothing is lost.

* SIGKILL of a worker in the middle of a steady stream, several times (tansu, 2 workers): every event ends
  up on `events.enriched` (or the DLQ); duplicates bounded by what was acked-but-uncommitted at each kill.
* Graceful restarts (SIGTERM) while events flow: one worker (noida-db; tansu in the soak run): no loss and
  no duplicates (README, Guarantees). Rolling restart of 2 workers (tansu): no loss and zero duplicates,
  in CI (2 restarts) and in the soak run (20 graceful restarts: 0 since the commit-before-revoke fix; 131 before).
  Rolling restart on noida-db wedges the consumer group (broker bug): `xfail(strict)`, soak only.
* An exception inside inference (a test-only hook makes the model raise, pipeline/model/faults.py): the batch
  is tried MODEL_ATTEMPTS times, then its events go to the DLQ as model_error with the reason; the worker goes on.
* Broker restart (noida-db, data on disk): the worker is left running, reconnects by itself, and every
  event from before and after the restart gets enriched. Judged on the broker's log read afresh: a live
  reader can miss records. noida-db itself can lose records it acknowledged when it stops (soak test
  `test_noida_keeps_acknowledged_records`, strict xfail); a loss explained by that is reported as an xfail.

Run: `pytest tests/e2e/test_faults.py -s` (figures are printed); `pytest -m soak -s` for the long runs.
Add `--basetemp=DIR` to keep the worker logs of a failed run (pytest keeps only its last 3 temp dirs).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import random
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.batching.scheduler import MODEL_ATTEMPTS
from pipeline.broker import EmbeddedBroker
from pipeline.ingest.reader import classify_group
from pipeline.kafka_client import ensure_topics
from pipeline.model.faults import FAIL_TIMES_ENV, FAIL_TOKEN_ENV
from tests.e2e.conftest import PARTITIONS, Topics, collect, free_port, produce, worker_settings
from tests.e2e.faults import (
    COMMIT_INTERVAL_S,
    OutputReader,
    StreamProducer,
    WorkerPool,
    explain_duplicates,
    explain_lost,
    group_offsets,
    log_diff,
    log_events,
    read_outputs,
    recheck_lost,
    timeline,
    vanished,
    wait_assigned,
)

pytestmark = pytest.mark.e2e

FINAL = ("enriched", "dlq")

# A bug found here. A graceful stop drains and commits ("Wait for streams..."), but every stop, start or
# kill makes the *surviving* workers rebalance, and there faust-streaming 0.15.3 loses acks:
# `Consumer.on_partitions_revoked` (faust/transport/consumer.py:654-661) drops `_acked` and
# `_committed_offset` of the revoked partitions *before* `App._on_partitions_revoked` waits for in-flight
# events and commits. An offset acked after the last periodic commit (every broker_commit_interval = 1 s),
# on a partition with no event in flight at the revoke to carry the commit past it, is never committed;
# the partition's next owner reads it again and enriches it a second time. Seen on tansu as a duplicate
# whose first enriched record is 10-40 ms before the survivor's "Revoking previously assigned partitions";
# instrumented (a scratch sitecustomize wrapping the consumer): "revoke: dropping acked={'p0': (249, 249)}"
# 15 ms after the periodic commit of p0 up to 249; the revoke's own commit then covered only p2.
# Roughly one duplicate every 3-6 survivor rebalances at 80/s on tansu (its 3 s join keeps the heartbeat
# close behind the commit tick, which keeps the window small; elsewhere it can be up to 1 s of acks).
# Was a bug (faust-streaming 0.15.3 Consumer.on_partitions_revoked clears _acked/_committed_offset before
# App._on_partitions_revoked commits: duplicates after graceful restarts, without any crash). Fixed by the
# commit-before-revoke in pipeline/kafka_transport.py; the soak test asserts zero duplicates again.
ROLLING_BUG = "rebalance replayed acked-but-uncommitted events (see pipeline/kafka_transport.py)"


def _lost(reader: OutputReader, ids: list[str], bootstrap: str, topics: Topics) -> list[str]:
    """Ids with no enriched or DLQ record. What the live reader lacks is looked up in the broker's log, read
    afresh: a live consumer can miss records (seen on tansu in a 20-restart soak run, on noida-db after a broker
    restart), and a record it missed is not a lost event. The misses are printed with what the reader had there."""
    missing = set(ids) - reader.done_ids()
    if not missing:
        return []
    now = read_outputs(bootstrap, topics)
    found = [o for o in now if o.topic in FINAL and o.id in missing]
    if found:
        had = {(o.topic, o.partition, o.offset): o.id for o in reader.snapshot()}
        print(
            f"\n  the live reader missed {len({o.id for o in found})} ids that the broker's log has: "
            + ", ".join(
                f"{o.id} at {o.topic} p{o.partition}@{o.offset} (the reader had "
                f"{had.get((o.topic, o.partition, o.offset), 'nothing')} there)"
                for o in found[:8]
            )
        )
    return sorted(missing - {o.id for o in found})


def _since(last: float | None, t: float) -> str:
    return "?" if last is None else f"{last - t:.1f}s"


# ---- 1. SIGKILL mid-stream --------------------------------------------------------------------------------------
def _kill_cycles(broker, topics: Topics, tmp_path: Path, *, kills: int, rate: float) -> None:
    """Two workers in one group; `kills` times: SIGKILL the older one while events flow at `rate`/s,
    start a fresh worker at once, wait until the group has settled again, let it run a moment.

    Why two workers: on tansu a SIGKILLed member's partitions stay with the dead member until its session
    expires (~11 s, brokers.md). With a second worker alive only half the partitions stall meanwhile."""
    rng = random.Random(1234)
    with WorkerPool(broker.url, topics, tmp_path) as pool, OutputReader(broker.bootstrap, topics) as reader:
        live = [pool.spawn(), pool.spawn()]
        for w in live:
            w.wait_ready(90)
        wait_assigned(live, topics.events, PARTITIONS, 60)

        producer = StreamProducer(broker.bootstrap, topics.events, topics.uid, n=10**7, rate=rate).start()
        t_start = time.time()
        kill_times: list[float] = []
        settle: list[float] = []
        for _ in range(kills):
            time.sleep(rng.uniform(1.0, 2.5))  # the settled group processes a while: kill mid-batch
            victim = live.pop(0)
            kill_times.append(time.time())
            victim.kill()  # SIGKILL to the worker's process group
            replacement = pool.spawn()  # same app id and topics: joins the same group
            live.append(replacement)
            replacement.wait_ready(90)
            settle.append(wait_assigned(live, topics.events, PARTITIONS, 60) + (time.time() - kill_times[-1]))
        time.sleep(1.5)
        producer.halt()
        producer.join(30)
        ids = producer.ids()
        t_end = time.time()

        last = reader.wait_done(ids, timeout=max(60.0, len(ids) / 50.0))
        lost = _lost(reader, ids, broker.bootstrap, topics)
        assert not lost, (
            f"{len(lost)}/{len(ids)} events lost after {kills} kills (kills at "
            f"{', '.join(f'+{t - producer.started_at:.2f}s' for t in kill_times)}):\n"
            + explain_duplicates(reader, producer, pool, lost)
            + "\n"
            + recheck_lost(broker.bootstrap, topics, lost, pool)
        )

        # ---- duplicates, attributed to what caused them ----
        # A duplicate is an event whose output record a worker had produced but whose input offset was not
        # committed: the partition's next owner reads it again. Its cause time is when its first copy was
        # produced (Kafka record timestamp): the first of two `deferred` records when the event was
        # deferred twice, else the first enriched/DLQ record. Whichever comes first after that time is the
        # cause: a kill (the killed worker's uncommitted work), or a partition revoke in a surviving worker
        # (the rebalances that follow every kill and every start: ROLLING_BUG, same bug as below).
        t0 = producer.started_at
        revokes = sorted(
            t0 + t
            for t, what in timeline(pool, t0)
            if "Revoking previously assigned partitions" in what and "set()" not in what
        )
        by_id = reader.by_id()
        per_kill = [0] * kills
        leads: list[list[float]] = [[] for _ in range(kills)]
        per_revoke: dict[float, int] = {}
        duplicates = 0
        for i in ids:
            outs = by_id[i]
            finals = sorted(o.ts for o in outs if o.topic in FINAL)
            if len(finals) < 2:
                continue
            extra = len(finals) - 1
            duplicates += extra
            deferred = sorted(o.ts for o in outs if o.topic == "deferred")
            cause = deferred[0] if len(deferred) >= 2 else finals[0]
            k = bisect.bisect_left(kill_times, cause)
            r = bisect.bisect_left(revokes, cause)
            next_kill = kill_times[k] if k < kills else float("inf")
            next_revoke = revokes[r] if r < len(revokes) else float("inf")
            if next_kill <= next_revoke and k < kills:
                per_kill[k] += extra
                leads[k].append(next_kill - cause)
            else:
                per_revoke[next_revoke] = per_revoke.get(next_revoke, 0) + extra

        # Bound: Faust commits acked offsets every broker_commit_interval (1 s), so what can be replayed
        # is what was acked-but-not-yet-committed -- the outputs of at most the last commit interval
        # before the kill or revoke (+0.5 s for the commit round trip), counted from the record timestamps
        # of all output topics (both workers: a loose upper bound) -- plus one full batch per partition
        # whose output was on its way at that moment (max_batch * partitions).
        window = COMMIT_INTERVAL_S + 0.5
        stamps = sorted(r.ts for r in reader.snapshot())
        max_batch = worker_settings().batching.max_batch

        def bound_at(t: float) -> tuple[int, int]:
            in_flight = bisect.bisect_right(stamps, t) - bisect.bisect_left(stamps, t - window)
            return max_batch * PARTITIONS + in_flight, in_flight

        print(
            f"\n[{broker.engine}] {kills} SIGKILLs, {len(ids)} events at {rate:.0f}/s over {t_end - t_start:.1f}s, "
            f"all enriched {_since(last, t_end)} after the load stopped; {duplicates} duplicates in all: "
            f"{sum(per_kill)} from kills, {sum(per_revoke.values())} from {len(per_revoke)} of the "
            f"{len(revokes)} survivor revokes"
        )
        for k, t_kill in enumerate(kill_times):
            bound, in_flight = bound_at(t_kill)
            lead = f", first copies {min(leads[k]):.2f}..{max(leads[k]):.2f}s before it" if leads[k] else ""
            print(
                f"  kill {k + 1}: {per_kill[k]} duplicates (bound {bound} = {max_batch}*{PARTITIONS} + "
                f"{in_flight} outputs in the {window:.1f}s before the kill{lead}); group settled after {settle[k]:.1f}s"
            )
            assert per_kill[k] <= bound, f"kill {k + 1}: {per_kill[k]} duplicates > bound {bound}"
        for t_rev, n in sorted(per_revoke.items()):
            assert t_rev != float("inf"), f"{n} duplicates after the last kill and the last revoke"
            bound, _ = bound_at(t_rev)
            print(f"  revoke at +{t_rev - t0:.1f}s: {n} duplicates (bound {bound}; {ROLLING_BUG[:60]}...)")
            assert n <= bound, f"{n} duplicates at the revoke at +{t_rev - t0:.1f}s > bound {bound}"


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_sigkill_mid_stream_loses_nothing(broker, topics, tmp_path) -> None:
    """CI: 3 SIGKILLs of a worker while events flow at 100/s."""
    _kill_cycles(broker, topics, tmp_path, kills=3, rate=100)


@pytest.mark.soak
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_sigkill_soak(broker, topics, tmp_path) -> None:
    """Soak: 20 SIGKILLs while events flow at 120/s (about 5 minutes)."""
    _kill_cycles(broker, topics, tmp_path, kills=20, rate=120)


# ---- 2. graceful restarts ------------------------------------------------------------------------------------
class Duplicates(AssertionError):
    """Duplicates where the README promises none."""


class GroupStuck(AssertionError):
    """The consumer group never settled again."""


def _graceful_restarts(
    broker, topics: Topics, tmp_path: Path, *, workers: int, rate: float, rounds: int = 1, settle_s: float = 60
) -> tuple[int, int]:
    """`workers` workers in one group; while events flow, SIGTERM the oldest and start a fresh one in its
    place, `workers * rounds` times (a rolling restart when workers=2). Asserts that nothing is lost;
    raises `Duplicates` (with the evidence) when an event was enriched twice. Returns (events, stops)."""
    with WorkerPool(broker.url, topics, tmp_path) as pool, OutputReader(broker.bootstrap, topics) as reader:
        live = [pool.spawn() for _ in range(workers)]
        for w in live:
            w.wait_ready(90)
        wait_assigned(live, topics.events, PARTITIONS, 60)

        producer = StreamProducer(broker.bootstrap, topics.events, topics.uid, n=10**7, rate=rate).start()
        t_start = time.time()
        steps = []
        for _ in range(workers * rounds):
            time.sleep(2.0)
            victim = live.pop(0)
            t0 = time.monotonic()
            code = victim.stop(30)  # SIGTERM; SIGKILL only after 30 s
            stop_s = time.monotonic() - t0
            assert stop_s < 30, f"graceful stop took {stop_s:.1f}s (SIGKILLed):\n{victim.log_tail()}"
            live.append(pool.spawn())
            try:
                # The worker only reports ready once it has partitions (Faust starts app tasks then).
                live[-1].wait_ready(settle_s)
                wait_assigned(live, topics.events, PARTITIONS, settle_s)
            except Exception as exc:
                raise GroupStuck(f"{exc}\n{explain_duplicates(reader, producer, pool, [])}") from None
            steps.append(f"{stop_s:.1f}s (exit {code})/{time.monotonic() - t0:.1f}s")
        time.sleep(2.0)
        producer.halt()
        producer.join(30)
        ids = producer.ids()
        t_end = time.time()

        last = reader.wait_done(ids, timeout=60)
        lost = _lost(reader, ids, broker.bootstrap, topics)
        assert not lost, (
            f"{len(lost)}/{len(ids)} events lost:\n"
            + explain_duplicates(reader, producer, pool, lost)
            + "\n"
            + recheck_lost(broker.bootstrap, topics, lost, pool)
        )
        counts = reader.final_counts()
        dup_ids = sorted(i for i in ids if counts[i] > 1)
        duplicates = sum(counts[i] - 1 for i in ids)
        print(
            f"\n[{broker.engine}] {workers} worker(s), {len(steps)} graceful restarts: {len(ids)} events at "
            f"{rate:.0f}/s over {t_end - t_start:.1f}s, {duplicates} duplicates; all enriched "
            f"{_since(last, t_end)} after the load stopped; stop/settled after SIGTERM: {', '.join(steps)}"
        )
        if duplicates:
            raise Duplicates(
                f"{duplicates} duplicates after graceful restarts:\n"
                + explain_duplicates(reader, producer, pool, dup_ids)
            )
        return len(ids), len(steps)


# noida in CI (the rolling restart below covers graceful stops on tansu); tansu with the soak runs.
@pytest.mark.parametrize("broker", [pytest.param("tansu", marks=pytest.mark.soak), "noida"], indirect=True)
def test_graceful_restart_no_duplicates(broker, topics, tmp_path) -> None:
    """One worker; while events flow: SIGTERM it, start a fresh one. Faust's stop waits for every event
    in flight to be acked ("Wait for streams...") and commits: no loss, no duplicates."""
    _graceful_restarts(broker, topics, tmp_path, workers=1, rate=50)


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_rolling_restart_no_duplicates(broker, topics, tmp_path) -> None:
    """CI: rolling restart of 2 workers at 80/s (2 graceful stops, ~4 survivor rebalances): no loss and, since
    the commit-before-revoke in pipeline/kafka_transport.py, no duplicates (`Duplicates` carries the evidence)."""
    _graceful_restarts(broker, topics, tmp_path, workers=2, rate=80)


@pytest.mark.soak
@pytest.mark.timeout(900)
@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_rolling_restart_no_duplicates_soak(broker, topics, tmp_path) -> None:
    """Soak: 10 rolling restarts of 2 workers (20 graceful stops, ~40 survivor rebalances) at 80/s:
    README says no duplicates; the bug above makes at least one all but certain."""
    _graceful_restarts(broker, topics, tmp_path, workers=2, rate=80, rounds=10)


@pytest.mark.soak
@pytest.mark.timeout(600)
@pytest.mark.xfail(
    strict=True,
    raises=GroupStuck,
    reason="noida-db: a member joins while the other one commits; noida-db answers that OffsetCommit with "
    "IllegalGeneration, aiokafka rejoins under a new member id, and noida-db keeps the old member id (which "
    "never heartbeats again) as group leader: every JoinGroup round ends with both live members followers "
    "and no SyncGroup assignment, forever (until the broker restarts). Not our code: production runs Kafka.",
)
@pytest.mark.parametrize("broker", ["noida"], indirect=True)
def test_rolling_restart_noida(broker, topics, tmp_path) -> None:
    _graceful_restarts(broker, topics, tmp_path, workers=2, rate=40, settle_s=40)


# ---- 3. an exception inside inference ----------------------------------------------------------------------------
POISON = "slmtest-poison-5e1d"  # the fault hook's token (pipeline/model/faults.py): a batch holding it fails


def _event(event_id: str, text: str) -> bytes:
    return orjson.dumps({"id": event_id, "text": text, "ts": int(time.time() * 1000)})


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_model_failure_retries_then_dead_letters(broker, topics, start_worker) -> None:
    """The worker's model raises (test-only hook) on texts holding POISON, the first 4 times. A poison event,
    alone in its batch: 3 attempts fail, then it goes to the DLQ as model_error with the reason; the worker goes
    on and enriches the events after it. A second poison event: its first attempt fails (the 4th fault), the
    retry succeeds, and it is enriched. Each step waits for the previous one, so each poison is a batch alone."""
    worker = start_worker(**{FAIL_TOKEN_ENV: POISON, FAIL_TIMES_ENV: str(MODEL_ATTEMPTS + 1)})
    out = [topics.enriched, topics.dlq]

    def step(values: list[bytes], enriched: int, dlq: int) -> dict[str, list[dict]]:
        asyncio.run(produce(broker.bootstrap, topics.events, values))
        return asyncio.run(collect(broker.bootstrap, out, {topics.enriched: enriched, topics.dlq: dlq}, 30, 0.5))

    step([_event(f"before-{i}", "I was charged twice for one order") for i in range(5)], 5, 0)
    poison = _event("poison", f"Where is my parcel? {POISON}")
    got = step([poison], 5, 1)
    assert len(got[topics.dlq]) == 1, got[topics.dlq]
    got = step([_event(f"after-{i}", "Please cancel my subscription") for i in range(5)], 10, 1)
    got = step([_event("poison-once", f"Please reset my password {POISON}")], 11, 1)

    assert worker.proc is not None and worker.proc.poll() is None, f"worker died:\n{worker.log_tail()}"
    ids = Counter(d["id"] for d in got[topics.enriched])
    want = [f"before-{i}" for i in range(5)] + [f"after-{i}" for i in range(5)] + ["poison-once"]
    assert ids == Counter(want), ids
    [dead] = got[topics.dlq]
    assert dead["error"]["type"] == "model_error"
    assert f"failed {MODEL_ATTEMPTS} times" in dead["error"]["message"], dead["error"]
    assert "InjectedModelFault" in dead["error"]["message"], dead["error"]
    assert base64.b64decode(dead["original"]["value_b64"]) == poison
    assert dead["original"]["topic"] == topics.events

    logged = log_events(worker)
    attempts = [e["attempt"] for e in logged if e.get("event") == "model_call_failed"]
    assert attempts == [*range(1, MODEL_ATTEMPTS + 1), 1], attempts  # 3 for the first poison, 1 for the second
    assert [e["size"] for e in logged if e.get("event") == "batch_to_dlq"] == [1]
    print(f"\n[{broker.engine}] model failures: attempts logged {attempts}; DLQ reason: {dead['error']['message']}")


# ---- 4. broker restart (noida-db, on disk) ----------------------------------------------------------------------
@pytest.fixture
def noida_broker(tmp_path: Path):
    """A noida-db broker of this test's own (own port, state and data dir), which the test may restart."""
    b = EmbeddedBroker("noida", port=free_port(), data_dir=tmp_path / "noida-data", state_dir=tmp_path / "broker")
    b.start()
    yield b
    b.stop()


async def _produce_through_stop(bootstrap: str, topic: str, broker: EmbeddedBroker, tag: str) -> dict[tuple, bytes]:
    """Produce (acks=all) for ~2.5 s; stop the broker gracefully 1 s in. Returns what the broker acknowledged:
    (partition, offset) -> value."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, request_timeout_ms=3000)
    await producer.start()
    futures = []
    stop = asyncio.create_task(asyncio.sleep(1.0))
    stopped: asyncio.Task | None = None
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 2.5:
        if stopped is None and stop.done():
            stopped = asyncio.create_task(asyncio.to_thread(broker.stop, 20))
        with contextlib.suppress(Exception):
            value = f"{tag}-{i:07d}".encode()
            futures.append((value, await producer.send(topic, value, partition=i % PARTITIONS)))
        i += 1
        if i % 50 == 0:
            await asyncio.sleep(0.001)
    assert stopped is not None
    await stopped
    acked = {}
    for value, fut in futures:
        with contextlib.suppress(Exception):
            meta = await fut
            acked[(meta.partition, meta.offset)] = value
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), 5)
    return acked


async def _read_partitions(bootstrap: str, topic: str) -> dict[tuple, bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        got: dict[tuple, bytes] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all([await consumer.position(tp) >= end[tp] for tp in tps]):
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                got.update(((tp.partition, r.offset), r.value) for r in records)
        return got
    finally:
        await consumer.stop()


@pytest.mark.soak
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="noida-db 0.2.3 goes on acknowledging (acks=all) and serving writes for the ~0.1 s between a SIGTERM and "
    "its exit, and does not save them: 200-450 records (50-110 per partition) gone after the restart in 4 of 5 "
    "single tries here, their offsets given to new records. Up to 5 stop/start cycles, so it shows. The cause of "
    "test_broker_restart_worker_reconnects' occasional loss (one batch of worker outputs written then).",
)
def test_noida_keeps_acknowledged_records(noida_broker: EmbeddedBroker) -> None:
    """Broker only, no worker: while a producer (acks=all) writes steadily, stop the broker gracefully and start
    it again. Every record it acknowledged must still be at its offset."""
    status = noida_broker.status()
    topic = f"durability-{Topics().uid}"
    asyncio.run(ensure_topics(status.bootstrap, [topic], PARTITIONS))
    for cycle in range(1, 6):
        acked = asyncio.run(_produce_through_stop(status.bootstrap, topic, noida_broker, f"c{cycle}"))
        noida_broker.start()
        now = asyncio.run(_read_partitions(status.bootstrap, topic))
        lost = sorted(k for k, v in acked.items() if now.get(k) != v)
        print(f"\n[noida] cycle {cycle}: {len(acked)} records acknowledged, {len(lost)} of them gone after the restart")
        assert not lost, (
            f"cycle {cycle}: {len(lost)} of {len(acked)} acknowledged records are gone after a graceful restart, "
            f"e.g. {lost[:4]}; per partition: {Counter(p for p, _ in lost)}"
        )


# noida-db's known fault (README "Guarantees", test_noida_keeps_acknowledged_records): records it acknowledged and
# served in the ~0.1 s between its SIGTERM and its exit are not saved. Worker outputs lost that way were written
# around the stop; this is how far from the SIGTERM such a record's Kafka timestamp may be (producer batching).
NOIDA_LOSS_WINDOW_S = 2.0


def test_broker_restart_worker_reconnects(noida_broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Worker running; a burst of events; graceful broker stop (noida-db saves its data) while the worker
    is still working through the burst; broker started again on the same port and data dir; more events.
    The worker is not touched: it reconnects by itself and every event from before and after is enriched.

    Every check runs first; only then, when events are missing *and* each of them is explained by noida-db's
    known fault (its final or deferred record was read live, then vanished from the broker's log, and had been
    written within NOIDA_LOSS_WINDOW_S of the SIGTERM), the test reports an xfail with the evidence. Any other loss
    fails it."""
    status = noida_broker.status()
    topics = Topics()
    asyncio.run(ensure_topics(status.bootstrap, topics.all, PARTITIONS))
    with WorkerPool(status.url, topics, tmp_path) as pool, OutputReader(status.bootstrap, topics) as reader:
        worker = pool.start()
        wait_assigned([worker], topics.events, PARTITIONS, 60)

        # A burst well above capacity: when the producer has its acks, the worker still has a backlog,
        # results on their way and offsets to commit.
        before = StreamProducer(status.bootstrap, topics.events, f"{topics.uid}-a", n=1500, rate=3000).start()
        before.join(30)
        group = classify_group(topics.env()["SLMSTREAM_APP_ID"])  # the classify path's consumer group
        # At least one periodic commit of part of the burst before the stop (polled, not slept for).
        deadline = time.monotonic() + 30
        offsets_before = group_offsets(status.bootstrap, group)
        while not any(k.startswith(f"{topics.events}/") and v > 0 for k, v in offsets_before.items()):
            assert time.monotonic() < deadline, f"no input offset committed in 30 s:\n{worker.log_tail()}"
            time.sleep(0.2)
            offsets_before = group_offsets(status.bootstrap, group)
        done_before_stop = len(reader.done_ids() & set(before.ids()))

        t_stop = time.time()
        noida_broker.stop(timeout=20)  # SIGTERM: noida-db writes its data on a clean exit
        stop_s = time.time() - t_stop
        assert stop_s < 20, f"noida-db needed SIGKILL after {stop_s:.1f}s: its data may be lost"
        time.sleep(3.0)  # the broker stays away a while: the worker's fetches, produces and commits fail meanwhile
        assert worker.proc is not None and worker.proc.poll() is None, f"worker died:\n{worker.log_tail()}"
        noida_broker.start()
        t_up = time.time()
        offsets_after = group_offsets(status.bootstrap, group)

        after = StreamProducer(status.bootstrap, topics.events, f"{topics.uid}-b", n=300, rate=100).start()
        after.join(60)
        ids = before.ids() + after.ids()
        reader.wait_done(ids, timeout=60)
        assert worker.proc.poll() is None, f"worker died:\n{worker.log_tail()}"
        # The verdict comes from the broker's log as it is now, read afresh: a live reader cannot be trusted
        # across this restart. noida-db loses the records it acknowledged in its last moments (written just after
        # the SIGTERM, served, then not saved) and gives their offsets to new records, which a live reader already
        # past those offsets never sees; the lost records' events had their inputs committed: they are gone.
        now = read_outputs(status.bootstrap, topics)
        finals = [o for o in now if o.topic in FINAL and o.id in set(ids)]
        lost = sorted(set(ids) - {o.id for o in finals})
        committed = group_offsets(status.bootstrap, group)
        report = (
            f"  live reader: no final record for {len(set(ids) - reader.done_ids())} ids (when not 0: written after the"
            f" restart at offsets it had passed), {reader.reread} records delivered again, {len(reader.reused)}"
            " offsets read twice with another record\n"
            + log_diff(reader.snapshot(), now, t_stop)
            + f"\n  committed before the stop {offsets_before}\n  committed after the restart {offsets_after}"
            + f"\n  committed now {committed}"
        )
        evidence = (
            f"{len(lost)}/{len(ids)} events have no enriched or DLQ record in the broker's log:\n"
            + explain_lost(lost, now, {**before.where, **after.where}, committed, topics, t_stop)
            + "\n"
            + report
        )
        # The broker's signature: a record the worker wrote for the event was acknowledged and served (the live
        # reader read it), then vanished from the log, and it was written around the SIGTERM. That record is the
        # final one (enriched/DLQ) or the deferred copy: once events.deferred acknowledged it, the input offset
        # was committed, so losing it loses the event just the same (seen with the slower batch-independent
        # model, which defers more of the burst).
        broker_lost = {
            o.id
            for o in vanished(reader.snapshot(), now)
            if o.topic in (*FINAL, "deferred") and abs(o.ts - t_stop) <= NOIDA_LOSS_WINDOW_S
        } & set(lost)
        unexplained = sorted(set(lost) - broker_lost)
        assert not unexplained, (
            f"{len(unexplained)} lost events are not explained by noida-db's known loss at a stop, e.g. "
            f"{unexplained[:5]}\n{evidence}\n{worker.log_tail(40)}"
        )

        # Reconnected: the worker produced again after the broker came back, and enriched the new events.
        first_after = min((o.ts for o in now if o.ts >= t_up), default=None)
        assert first_after is not None, f"nothing produced after the broker came back:\n{worker.log_tail(40)}"
        after_finals = [o.ts for o in finals if o.id in set(after.ids())]
        assert len({o.id for o in finals if o.id in set(after.ids())}) == len(after.ids()), evidence
        first_b = min(after_finals)
        last = max(o.ts for o in finals)
        counts = Counter(o.id for o in finals)
        duplicates = sum(counts[i] - 1 for i in ids)
        # Duplicates are allowed here (at-least-once): what the worker had output but not committed when
        # the broker went away is read again -- the outputs of the last commit interval (+0.5 s) before the
        # stop, everything it output while the broker was away (those commits fail; records created then
        # are delivered after the restart), plus a batch per partition.
        stamps = [o.ts for o in now]
        window = COMMIT_INTERVAL_S + 0.5
        max_batch = worker_settings().batching.max_batch
        bound = max_batch * PARTITIONS + sum(t_stop - window <= t <= t_up for t in stamps)
        print(
            f"\n[noida] broker restart: {done_before_stop}/{len(before.ids())} of the burst done when the broker "
            f"stopped (stop took {stop_s:.1f}s, down {t_up - t_stop:.1f}s); the worker produced again "
            f"{first_after - t_up:.1f}s after the broker was back, the first new event was enriched "
            f"{first_b - t_up:.1f}s after; {len(ids) - len(lost)}/{len(ids)} enriched {last - t_up:.1f}s after the "
            f"restart; {duplicates} duplicates (bound {bound})\n{report}"
        )
        assert duplicates <= bound, f"{duplicates} duplicates > bound {bound}\n{report}"

    # Everything is on the restarted broker's disk, read again from the start (the broker's own losses aside).
    kept = set(ids) - broker_lost
    got = asyncio.run(collect(status.bootstrap, [topics.enriched, topics.dlq], {topics.enriched: len(kept)}, 60, 1))
    assert {d["id"] for d in got[topics.enriched]} | {_dlq_id(d) for d in got[topics.dlq]} >= kept

    # Last, and only on the broker's signature: the events noida-db lost.
    if broker_lost:
        pytest.xfail(f"noida-db lost records it had acknowledged (broker bug, not the worker's):\n{evidence}")


def _dlq_id(record: dict) -> str | None:
    with contextlib.suppress(Exception):
        return orjson.loads(base64.b64decode(record["original"]["value_b64"]))["id"]
    return None
