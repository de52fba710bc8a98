"""Open-loop load from several processes, for rates one Python producer cannot send (tens of thousands/s).

    sender k of K ─ sends events i ≡ k (mod K) at start + i / rate ─┐
                                                                  ├─► input topic ─► workers ─► output topic
    reader r of R ◄─ partitions p ≡ r (mod R) of the output topic ──┘

Send times are fixed in advance from one shared start (no coordinated omission), exactly as in loadgen.py;
the parent knows every event's scheduled time without asking. Readers keep, per event id, the time it was
first read, and answer counts and those times over a pipe. All processes are spawned (not forked): the
parent may hold a CUDA context or an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

STEP_SEPARATOR = "-"  # event ids are `<prefix>-<index>`: the prefix names the step


# ---- sender process ----------------------------------------------------------------------------------------
async def _send_share(
    bootstrap: str,
    topic: str,
    docs: Sequence[dict],
    prefix: str,
    total: int,
    k: int,
    senders: int,
    rate: float,
    start: float,
) -> dict[str, float]:
    from bench.events import events_at
    from bench.loadgen import make_producer

    # this sender's events, encoded before the clock starts
    mine = list(range(k, total, senders))
    events = events_at(docs, mine, prefix)
    producer = await make_producer(bootstrap)
    worst_lag_ms, j, n = 0.0, 0, len(mine)
    futures = []
    try:
        await asyncio.sleep(max(start - time.time(), 0.0))
        while j < n:
            now = time.time()
            due_first = start + mine[j] / rate
            if due_first <= now:
                worst_lag_ms = max(worst_lag_ms, (now - due_first) * 1000.0)
                while j < n and start + mine[j] / rate <= now:
                    ev = events[j]
                    futures.append(
                        await producer.send(topic, ev.encode(int((start + mine[j] / rate) * 1000)), key=ev.key)
                    )
                    j += 1
            if j < n:
                await asyncio.sleep(max(start + mine[j] / rate - time.time(), 0.0))
        end = time.time()
        await asyncio.gather(*futures)
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
    return {"sent": n, "end_s": end, "worst_lag_ms": worst_lag_ms}


def sender_main(conn: Connection, bootstrap: str, topic: str, docs: list[dict], k: int, senders: int) -> None:
    """A sender process: waits for ("send", prefix, total, rate, start); answers with its report."""
    while True:
        cmd = conn.recv()
        if cmd[0] == "stop":
            return
        _, prefix, total, rate, start = cmd
        try:
            conn.send(("ok", asyncio.run(_send_share(bootstrap, topic, docs, prefix, total, k, senders, rate, start))))
        except Exception as exc:  # the parent reports it
            conn.send(("error", repr(exc)))


# ---- reader process ----------------------------------------------------------------------------------------
async def _read(conn: Connection, bootstrap: str, topic: str, partitions: list[int]) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=20
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    read_ms: dict[str, dict[bytes, float]] = {}
    duplicates = 0
    conn.send(("ready", None))
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=50, max_records=20000)
            now = time.time() * 1000.0
            for records in batch.values():
                for r in records:
                    key = r.key or b""
                    step = key.rpartition(STEP_SEPARATOR.encode())[0].decode(errors="replace")
                    seen = read_ms.setdefault(step, {})
                    if key in seen:
                        duplicates += 1
                    else:
                        seen[key] = now
            while conn.poll():
                cmd = conn.recv()
                if cmd[0] == "stop":
                    return
                if cmd[0] == "count":
                    conn.send(("count", len(read_ms.get(cmd[1], ()))))
                elif cmd[0] == "take":
                    conn.send(("take", read_ms.pop(cmd[1], {})))
                elif cmd[0] == "duplicates":
                    conn.send(("duplicates", duplicates))
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


def reader_main(conn: Connection, bootstrap: str, topic: str, partitions: list[int]) -> None:
    try:
        asyncio.run(_read(conn, bootstrap, topic, partitions))
    except Exception as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", repr(exc)))


# ---- the parent's side -------------------------------------------------------------------------------------
@dataclass
class _Child:
    proc: Any
    conn: Connection


class MultiProcessLoad:
    """K sender and R reader processes for one input and one output topic; `close()` stops them all."""

    def __init__(
        self,
        bootstrap: str,
        input_topic: str,
        output_topic: str,
        partitions: int,
        docs: list[dict],
        senders: int,
        readers: int,
    ) -> None:
        self.ctx = mp.get_context("spawn")
        self.bootstrap, self.input_topic, self.output_topic = bootstrap, input_topic, output_topic
        self.partitions, self.docs = partitions, docs
        self.n_senders, self.n_readers = max(1, senders), max(1, min(readers, partitions))
        self.senders: list[_Child] = []
        self.readers: list[_Child] = []

    def start(self, timeout: float = 60.0) -> None:
        for r in range(self.n_readers):
            parts = [p for p in range(self.partitions) if p % self.n_readers == r]
            self.readers.append(self._spawn(reader_main, self.bootstrap, self.output_topic, parts))
        for k in range(self.n_senders):
            self.senders.append(
                self._spawn(sender_main, self.bootstrap, self.input_topic, self.docs, k, self.n_senders)
            )
        for child in self.readers:
            if not child.conn.poll(timeout):
                raise RuntimeError(f"a reader process did not start within {timeout:.0f} s")
            tag, value = child.conn.recv()
            if tag != "ready":
                raise RuntimeError(f"reader process failed: {value}")

    def _spawn(self, target: Any, *args: Any) -> _Child:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=target, args=(child, *args), daemon=True)
        proc.start()
        return _Child(proc, parent)

    def send_step(self, prefix: str, total: int, rate: float, lead_s: float | None = None) -> float:
        """Tell every sender to send its share of `total` events at `rate` in all; return the common start
        (epoch s: event i is scheduled at start + i / rate). Their reports come from `wait_sent`."""
        # time for each sender to encode its share before the first send is due (~10 µs an event, with margin)
        lead = lead_s if lead_s is not None else 1.0 + total * 10e-6 / self.n_senders
        start = time.time() + lead
        for child in self.senders:
            child.conn.send(("send", prefix, total, rate, start))
        return start

    def wait_sent(self, timeout: float) -> list[dict]:
        reports = []
        for child in self.senders:
            if not child.conn.poll(timeout):
                raise RuntimeError(f"a sender did not finish within {timeout:.0f} s")
            tag, value = child.conn.recv()
            if tag != "ok":
                raise RuntimeError(f"sender failed: {value}")
            reports.append(value)
        return reports

    def _ask(self, *cmd: Any) -> list[Any]:
        for child in self.readers:
            child.conn.send(cmd)
        out = []
        for child in self.readers:
            if not child.conn.poll(30):
                raise RuntimeError("a reader process stopped answering")
            tag, value = child.conn.recv()
            if tag == "error":
                raise RuntimeError(f"reader failed: {value}")
            out.append(value)
        return out

    def count(self, prefix: str) -> int:
        return sum(self._ask("count", prefix))

    def take(self, prefix: str) -> dict[bytes, float]:
        merged: dict[bytes, float] = {}
        for part in self._ask("take", prefix):
            merged.update(part)
        return merged

    def duplicates(self) -> int:
        return sum(self._ask("duplicates"))

    def wait_for(self, prefix: str, total: int, timeout: float, alive: Any = lambda: None) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self.count(prefix) >= total:
                return True
            alive()
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def close(self) -> None:
        for child in self.senders + self.readers:
            with contextlib.suppress(Exception):
                child.conn.send(("stop",))
        for child in self.senders + self.readers:
            child.proc.join(5)
            if child.proc.is_alive():
                child.proc.terminate()
                child.proc.join(5)
