"""The whole pipeline under load: a fresh broker, one worker, and this process producing and reading.

    bench ─produce→ events ─→ worker (validate → batch → model) ─→ events.enriched ─consume→ bench

Steps, all on the same worker process (model loaded and warm):
  warm-up   a few batches, until results come back: the worker's consumer group has joined
  max rate  N events as fast as the producer goes; events/s = N / (first send → last result read)
  latency   open loop at half the max rate for a while; latency = result read − scheduled send time

This process shares the cores with the worker and the broker, so its own work stays light while a step
runs: messages are pre-encoded, results are only counted by key on arrival and parsed after the step.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord

from bench.events import BenchEvent
from bench.loadgen import make_producer, send_open_loop
from bench.machine import BenchBroker, free_port, stop_worker_and_broker
from bench.procstat import machine_busy_s, proc_cpu_s
from bench.reader import TopicReader
from bench.stats import ResultTiming, batch_breakdown, latency_parts, rate, steady_rate, summarize
from pipeline.broker import BrokerStatus
from pipeline.config import Settings
from pipeline.kafka_client import ensure_topics
from pipeline.output.partitioner import DefaultPartitioner
from pipeline.worker_process import WorkerProcess


@dataclass
class CpuSample:
    wall: float
    worker: float
    broker: float
    bench: float
    machine: float


@dataclass
class Harness:
    """A broker and a worker started for one bench run; `stop()` always takes both down."""

    settings: Settings
    engine: str
    run_dir: Path
    app_id: str
    batch_size: int
    broker: BenchBroker | None = None
    status: BrokerStatus | None = None
    worker: WorkerProcess | None = None
    topics: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)  # more worker settings (SLMSTREAM_* env vars)

    def start(self, ready_timeout: float = 120.0) -> None:
        t = self.settings.topics
        self.topics = [t.events, t.enriched, t.dlq, t.deferred]
        self.broker = BenchBroker(self.engine, self.run_dir)
        self.status = self.broker.start()
        asyncio.run(ensure_topics(self.status.bootstrap, self.topics, t.partitions, t.replicas))
        b = self.settings.batching
        env = {
            "SLMSTREAM_BROKER": self.status.url,
            "SLMSTREAM_APP_ID": self.app_id,
            "SLMSTREAM_LOG_LEVEL": "warning",  # no per-batch log lines
            "SLMSTREAM_LOG_FORMAT": "json",
            # Max-rate step: events wait in Kafka past their budget; classify each once, report deadline_met.
            "SLMSTREAM_BATCHING__LATE_POLICY": "process",
            "SLMSTREAM_BATCHING__MAX_BATCH": str(self.batch_size),
            "SLMSTREAM_BATCHING__QUEUE_LIMIT": str(max(b.queue_limit, self.batch_size)),
            **self.extra_env,
        }
        self.worker = WorkerProcess(env, self.run_dir / "worker.log", self.run_dir / "worker-data", free_port())
        self.worker.start()
        self.worker.wait_ready(ready_timeout)

    def stop(self) -> None:
        stop_worker_and_broker(self.worker, self.broker)

    @property
    def bootstrap(self) -> str:
        assert self.status is not None
        return self.status.bootstrap

    def check_alive(self) -> None:
        if self.worker is not None:
            self.worker.check_alive()

    def cpu(self) -> CpuSample:
        worker_pid = self.worker.pid if self.worker else None
        return CpuSample(
            time.time(),
            proc_cpu_s(worker_pid),
            proc_cpu_s(self.status.pid if self.status else None),
            proc_cpu_s(os.getpid()),
            machine_busy_s(),
        )


class Collector(TopicReader):
    """Reads events.enriched and events.dlq from the start; keeps the first record of each key, with the
    time it was read. The enriched record's key is the event id, so nothing is parsed on arrival."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        t = settings.topics
        super().__init__(bootstrap, [t.enriched, t.dlq], t.partitions)
        self.enriched_topic, self.dlq_topic = t.enriched, t.dlq
        self.seen: dict[bytes, dict[bytes, tuple[float, bytes]]] = {}  # prefix → key → (read at, value)
        self.dlq: list[bytes] = []
        self.duplicates = 0
        self._changed = asyncio.Event()

    def on_records(self, topic: str, records: list[ConsumerRecord], read_at: float) -> None:
        if topic == self.dlq_topic:
            self.dlq.extend(r.value or b"" for r in records)
            return
        for r in records:
            key = r.key or b""
            bucket = self.seen.setdefault(key.partition(b"-")[0], {})
            if key in bucket:
                self.duplicates += 1
            else:
                bucket[key] = (read_at, r.value or b"")

    def on_fetched(self) -> None:
        self._changed.set()

    def count(self, prefix: str) -> int:
        return len(self.seen.get(prefix.encode(), {}))

    def records(self, prefix: str) -> dict[bytes, tuple[float, bytes]]:
        return self.seen.get(prefix.encode(), {})

    async def wait_for(self, prefix: str, n: int, timeout: float, alive: Callable[[], None]) -> bool:
        """Wait until n distinct results with ids `<prefix>-...` were read; False on timeout. `alive` raises
        when the system under test died."""
        deadline = time.monotonic() + timeout
        while self.count(prefix) < n:
            self.check()  # the consumer loop died: raise its error
            alive()
            if self.dlq:
                raise RuntimeError(f"{len(self.dlq)} bench events went to the DLQ, e.g. {self.dlq[0][:300]!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        return True


def _cpu_delta(a: CpuSample, b: CpuSample) -> dict[str, float]:
    wall = max(b.wall - a.wall, 1e-9)
    ours = (b.worker - a.worker) + (b.broker - a.broker) + (b.bench - a.bench)
    return {
        "wall_s": wall,
        "worker_cores": (b.worker - a.worker) / wall,
        "broker_cores": (b.broker - a.broker) / wall,
        "bench_cores": (b.bench - a.bench) / wall,
        "machine_cores": (b.machine - a.machine) / wall,
        "other_processes_cores": max((b.machine - a.machine) - ours, 0.0) / wall,
    }


def _timings(recs: dict[bytes, tuple[float, bytes]]) -> tuple[list[ResultTiming], int]:
    """Parse the results of a step (after it: not while it runs); also count deadline_met."""
    rows, met = [], 0
    for read_at, value in recs.values():
        d = orjson.loads(value)
        a = d["analysis"]
        lat = a["latency_ms"]
        rows.append(ResultTiming(d["ts"], lat["total"], lat["queue"], lat["model"], read_at * 1000.0))
        met += bool(a["deadline_met"])
    return rows, met


async def blast(producer: AIOKafkaProducer, topic: str, events: list[BenchEvent]) -> tuple[float, float]:
    """Send all events as fast as possible, `ts` = send time; return (first send, all acked) epoch s. Each keyed
    event goes to the partition Kafka's default partitioner picks, computed here by ours (aiokafka's pure-Python
    murmur2 was most of a send's cost: the sender, not the system, limited the rate)."""
    partitions = sorted(await producer.partitions_for(topic))
    choose = DefaultPartitioner()
    first = time.time()
    futures = []
    for ev in events:
        key = ev.key
        partition = None if key is None else choose(key, partitions, partitions)
        futures.append(await producer.send(topic, ev.encode(int(time.time() * 1000)), key=key, partition=partition))
    await asyncio.gather(*futures)
    return first, time.time()


@dataclass
class StepTimeouts:
    warmup_s: float = 90.0
    per_event_s: float = 0.05  # generous: 20 events/s at least
    minimum_s: float = 60.0

    def for_events(self, n: int) -> float:
        return max(self.minimum_s, n * self.per_event_s)


async def run_steps(
    harness: Harness,
    warmup: list[BenchEvent],
    max_rate_events: list[BenchEvent],
    make_latency_events: Callable[[int], list[BenchEvent]],  # built once the max rate is known
    latency_seconds: float,
    progress: Callable[[str], None] = lambda _msg: None,
    timeouts: StepTimeouts | None = None,
) -> dict[str, object]:
    timeouts = timeouts or StepTimeouts()
    settings = harness.settings
    topic = settings.topics.events
    collector = Collector(settings, harness.bootstrap)
    await collector.start()
    producer = await make_producer(harness.bootstrap)
    out: dict[str, object] = {}
    try:
        # -- warm-up: until results come back, the worker's group has joined and the path is warm
        progress(f"warm-up: {len(warmup)} events, until the worker's consumer group has joined")
        t0 = time.time()
        await blast(producer, topic, warmup)
        if not await collector.wait_for("wu", len(warmup), timeouts.warmup_s, harness.check_alive):
            raise RuntimeError(f"warm-up: {collector.count('wu')}/{len(warmup)} results after {timeouts.warmup_s}s")
        out["warmup"] = {"events": len(warmup), "seconds": time.time() - t0}
        await asyncio.sleep(0.5)  # let the last acks and commits settle

        # -- max rate
        n = len(max_rate_events)
        progress(f"max rate: {n} events as fast as possible")
        c0 = harness.cpu()
        first, acked = await blast(producer, topic, max_rate_events)
        if not await collector.wait_for("tp", n, timeouts.for_events(n), harness.check_alive):
            raise RuntimeError(f"max-rate step: only {collector.count('tp')}/{n} results read")
        c1 = harness.cpu()
        recs = collector.records("tp")
        times = [t for t, _ in recs.values()]
        last = max(times)
        eps = rate(n, last - first)
        rows, met = _timings(recs)
        out["max_rate"] = {
            "events": n,
            "produce_s": acked - first,
            "produce_events_per_s": rate(n, acked - first),
            "seconds": last - first,
            "events_per_s": eps,
            "steady_events_per_s": steady_rate(times),
            "first_result_after_s": min(times) - first,
            "deadline_met_share": met / n,
            "latency_parts_ms": latency_parts(rows),
            "cpu": _cpu_delta(c0, c1),
            "worker": batch_breakdown(rows, last - first),
            "duplicates": collector.duplicates,
        }
        await asyncio.sleep(1.0)  # idle gap between the steps

        # -- latency at half the max rate, same worker
        half = max(eps / 2.0, 1.0)
        count = max(int(half * latency_seconds), 1)
        events = make_latency_events(count)
        progress(f"latency: {count} events at {half:.0f}/s (half the max rate) for {latency_seconds:.0f} s")
        c0 = harness.cpu()
        sent = await send_open_loop(producer, topic, events, half)
        complete = await collector.wait_for("lat", count, max(30.0, timeouts.minimum_s / 2), harness.check_alive)
        c1 = harness.cpu()
        recs = collector.records("lat")
        rows, met = _timings(recs)
        got = len(rows)
        out["latency"] = {
            "rate_per_s": half,
            "events": count,
            "results": got,
            "complete": complete,
            "send_seconds": sent.end_s - sent.start_s,
            "achieved_send_rate": rate(count, sent.end_s - sent.start_s),
            "worst_send_lag_ms": sent.worst_lag_ms,
            # read here − `ts` (the scheduled send time): what a reader of events.enriched sees
            "end_to_end_ms": summarize([r.read_ms - r.ts_ms for r in rows if r.read_ms is not None]),
            "worker_total_ms": summarize([r.total_ms for r in rows]),  # analysis.latency_ms.total
            "latency_parts_ms": latency_parts(rows),
            "deadline_met_share": met / got if got else 0.0,
            "cpu": _cpu_delta(c0, c1),
            "worker": batch_breakdown(rows, c1.wall - c0.wall),
            "duplicates": collector.duplicates,
        }
        out["dlq"] = len(collector.dlq)
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        with contextlib.suppress(Exception):
            await collector.stop()
    return out
