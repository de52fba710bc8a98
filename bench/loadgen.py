"""Open-loop load and result collection for the benches: one producer, one reader per output topic.

The sender fixes every send time in advance (send i at start + i / rate) and never waits for results or
acks, so a slow system cannot slow the load down (no coordinated omission). The reader records, per
output key (the event id, in every system), when it was read and the broker timestamp of the record;
nothing is parsed while a step runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, ConsumerRecord

from bench.events import BenchEvent
from bench.reader import TopicReader
from bench.stats import schedule_time


class OutputReader(TopicReader):
    """Reads one topic from its start; keeps the first (read ms, record timestamp ms) of each key."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, fetch_max_wait_ms: int = 20) -> None:
        super().__init__(bootstrap, [topic], partitions, fetch_max_wait_ms)
        self.topic = topic
        self.read_ms: dict[bytes, float] = {}
        self.broker_ts_ms: dict[bytes, float] = {}
        self.duplicates = 0

    def on_records(self, topic: str, records: list[ConsumerRecord], read_at: float) -> None:
        now = read_at * 1000.0
        for r in records:
            key = r.key or b""
            if key in self.read_ms:
                self.duplicates += 1
            else:
                self.read_ms[key] = now
                self.broker_ts_ms[key] = float(r.timestamp)

    def count(self, ids: Sequence[bytes]) -> int:
        return sum(1 for i in ids if i in self.read_ms)

    async def wait_for(self, ids: Sequence[bytes], timeout: float, alive: Callable[[], None] = lambda: None) -> bool:
        """Wait until every id was read; False on timeout. `alive` raises when the system under test died."""
        deadline = time.monotonic() + timeout
        left = list(ids)
        while True:
            left = [i for i in left if i not in self.read_ms]
            if not left:
                return True
            self.check()
            alive()
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)


async def make_producer(bootstrap: str) -> AIOKafkaProducer:
    # acks=1: the systems read what the broker has; linger 2 ms batches a burst but adds little latency.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1, max_batch_size=256 * 1024)
    await producer.start()
    return producer


@dataclass
class SendReport:
    start_s: float  # epoch s of send 0
    end_s: float  # when the last send was handed to the producer
    scheduled_ms: list[float]  # per event, the `ts` it carries
    worst_lag_ms: float  # latest a send went out behind its schedule


async def send_open_loop(
    producer: AIOKafkaProducer,
    topic: str,
    events: Sequence[BenchEvent],
    rate_per_s: float,
    *,
    on_sent: Callable[[int], None] = lambda _n: None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> SendReport:
    """Send events[i] at start + i / rate with `ts` = that scheduled time; `on_sent(n)` after each burst
    (n events sent so far). Acks are awaited only after the last send. A send that is late (the loop was
    held up) goes out at once with the others that fell due meanwhile; the schedule itself never moves.
    `clock` (epoch seconds) and `sleep` are injectable for tests."""
    start = clock() + 0.05
    due_s = [schedule_time(start, i, rate_per_s) for i in range(len(events))]
    scheduled = [t * 1000.0 for t in due_s]
    futures = []
    worst = 0.0
    i, n = 0, len(events)
    while i < n:
        # Due = its scheduled time has come, compared exactly as the sleep below aims (no float drift between
        # "how many are due" and "when to wake": the loop neither spins nor sends early).
        now = clock()
        if due_s[i] <= now:
            worst = max(worst, (now - due_s[i]) * 1000.0)
            while i < n and due_s[i] <= now:
                ev = events[i]
                futures.append(await producer.send(topic, ev.encode(int(scheduled[i])), key=ev.key))
                i += 1
            on_sent(i)
        if i < n:
            await sleep(max(due_s[i] - clock(), 0.0))
    end = clock()
    await asyncio.gather(*futures)
    return SendReport(start, end, scheduled, worst)
