"""`slmstream bench compare`: the same open-loop load through one broker into each system in turn.

    bench ─produce (open loop)→ bench-<system>-in ─→ system ─→ bench-<system>-out ─read→ bench

For each system: start it, warm up until its results come back, then one step per rate (warm-up part,
measured part), stopping after `past_saturation` saturated steps; between steps, wait for its backlog to
drain. Systems run one after the other, so they never share the cores. The bare model (the ceiling) is
measured first, in this process, before the broker starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.events import BenchEvent, make_events
from bench.loadgen import OutputReader, make_producer, send_open_loop
from bench.machine import free_port
from bench.procstat import machine_busy_s, proc_cpu_s
from bench.stats import rate, steady_rate, summarize
from bench.steps import StepResult, keep_stepping, plan_steps, summarize_step
from bench.systems import SystemProcess
from pipeline.broker import BrokerStatus
from pipeline.kafka_client import ensure_topics

Progress = Callable[[str], None]
WARMUP_EVENTS = 64


@dataclass
class CompareOptions:
    systems: list[str]
    rates: list[float]
    seconds: float = 20.0  # measured part of each step
    warmup_s: float = 5.0  # unmeasured start of each step
    budget_ms: float = 250.0
    past_saturation: int = 1  # saturated steps to run before stopping a system
    drain_s: float = 60.0  # longest wait for a step's results after its last send
    ready_timeout_s: float = 120.0
    late_policy: str = "process"
    partitions: int = 4  # of every bench topic (settings.topics.partitions: the worker declares the same)
    extra_env: dict[str, str] = field(default_factory=dict)


class Cpu:
    """CPU seconds of the system, the broker, this process and the machine, between two marks."""

    def __init__(self, system_pid: int | None, broker_pid: int | None) -> None:
        self.pids = {"system": system_pid, "broker": broker_pid, "bench": os.getpid()}

    def sample(self) -> dict[str, float]:
        s = {k: proc_cpu_s(p) for k, p in self.pids.items()}
        s["machine"] = machine_busy_s()
        s["wall"] = time.time()
        return s

    @staticmethod
    def cores(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        wall = max(b["wall"] - a["wall"], 1e-9)
        out = {f"{k}_cores": (b[k] - a[k]) / wall for k in ("system", "broker", "bench", "machine")}
        ours = sum(b[k] - a[k] for k in ("system", "broker", "bench"))
        out["other_processes_cores"] = max((b["machine"] - a["machine"]) - ours, 0.0) / wall
        return out


async def _warm_up(
    system: SystemProcess, producer: AIOKafkaProducer, reader: OutputReader, docs: Sequence[dict], timeout: float
) -> float:
    """Send a few events until their results come back (the system's group joined, its model is warm)."""
    t0 = time.monotonic()
    await asyncio.to_thread(system.wait_ready, timeout)
    warm = make_events(docs, WARMUP_EVENTS, f"{system.name}-wu")
    await send_open_loop(producer, system.input_topic, warm, 50.0)
    if not await reader.wait_for([e.id for e in warm], timeout, system.check_alive):
        got = reader.count([e.id for e in warm])
        raise RuntimeError(
            f"{system.name}: {got}/{len(warm)} warm-up results after {timeout:.0f}s; log {system.log_file}:\n"
            + system.log_tail()
        )
    return time.monotonic() - t0


async def run_steps(
    system: SystemProcess,
    broker_pid: int | None,
    producer: AIOKafkaProducer,
    reader: OutputReader,
    docs: Sequence[dict],
    opts: CompareOptions,
    progress: Progress,
) -> tuple[list[StepResult], list[dict[str, Any]]]:
    """The rate steps of one system: summaries, and per step the extra figures (CPU, broker-timestamp
    latency) that the ratios do not use."""
    cpu = Cpu(system.pid, broker_pid)
    results: list[StepResult] = []
    extras: list[dict[str, Any]] = []
    for k, plan in enumerate(plan_steps(opts.rates, opts.seconds, opts.warmup_s)):
        events: list[BenchEvent] = make_events(docs, plan.total, f"{system.name}-s{k}")
        ids = [e.id for e in events]
        progress(f"{system.name}: {plan.rate:.0f} events/s for {opts.warmup_s:.0f}+{opts.seconds:.0f} s")
        marks: dict[str, dict[str, float]] = {}

        def on_sent(n: int, warm: int = plan.warmup_events, marks: dict[str, dict[str, float]] = marks) -> None:
            if n >= warm and "start" not in marks:  # the measured part starts: CPU from here
                marks["start"] = cpu.sample()

        report = await send_open_loop(producer, system.input_topic, events, plan.rate, on_sent=on_sent)
        end = cpu.sample()
        backlog = plan.total - reader.count(ids)
        measured = ids[plan.warmup_events :]
        await reader.wait_for(measured, opts.drain_s, system.check_alive)
        scheduled = {ids[i]: report.scheduled_ms[i] for i in range(plan.warmup_events, plan.total)}
        step = summarize_step(
            plan.rate,
            scheduled,
            reader.read_ms,
            opts.budget_ms,
            backlog_at_end=backlog,
            worst_send_lag_ms=report.worst_lag_ms,
        )
        results.append(step)
        produced = [reader.broker_ts_ms[i] - t for i, t in scheduled.items() if i in reader.broker_ts_ms]
        read_at = [reader.read_ms[i] / 1000.0 for i in measured if i in reader.read_ms]
        extras.append(
            {
                "cpu": Cpu.cores(marks.get("start", end), end),
                # scheduled send → the result record's broker timestamp (the system's producer stamps it)
                "to_output_timestamp_ms": summarize(produced),
                "steady_rate": steady_rate(read_at),
                "send_rate": rate(plan.total, report.end_s - report.start_s),
            }
        )
        progress(
            f"   achieved {step.achieved_rate:.0f}/s, p50 {step.p50_ms:.0f} p99 {step.p99_ms:.0f} ms, "
            f"misses {step.deadline_misses}/{step.sent}, backlog {backlog}"
        )
        if not keep_stepping(results, opts.budget_ms, opts.past_saturation):
            break
        # The next step starts from an empty queue: wait out this step's backlog (warm-up part included).
        if not await reader.wait_for(ids, opts.drain_s, system.check_alive):
            progress(f"   {system.name} did not drain within {opts.drain_s:.0f} s: no further steps")
            break
        await asyncio.sleep(1.0)
    return results, extras


async def _stop_all(system: Any, producer: Any, reader: Any) -> None:
    """Stop the system under test, then the bench's producer and reader (their own errors do not matter then)."""
    await asyncio.to_thread(system.stop)
    with contextlib.suppress(Exception):
        await producer.stop()
    with contextlib.suppress(Exception):
        await reader.stop()


@contextlib.asynccontextmanager
async def _running(
    system: SystemProcess,
    status: BrokerStatus,
    docs: Sequence[dict],
    partitions: int,
    ready_timeout_s: float,
    progress: Progress,
) -> AsyncIterator[tuple[AIOKafkaProducer, OutputReader, float]]:
    """The system started and warmed up, with a producer into it and a reader of its output (and the warm-up
    time); all of it stopped on the way out, whatever happened."""
    await ensure_topics(status.bootstrap, system.topics, partitions)
    reader = OutputReader(status.bootstrap, system.output_topic, partitions)
    await reader.start()
    producer = await make_producer(status.bootstrap)
    try:
        system.start()
        progress(f"{system.name}: started (log {system.log_file}); warming up")
        warm_s = await _warm_up(system, producer, reader, docs, ready_timeout_s)
        yield producer, reader, warm_s
    finally:
        await _stop_all(system, producer, reader)


async def run_system(
    system: SystemProcess, status: BrokerStatus, docs: Sequence[dict], opts: CompareOptions, progress: Progress
) -> dict[str, Any]:
    """Start one system, warm it up, run its steps, stop it (always)."""
    async with _running(system, status, docs, opts.partitions, opts.ready_timeout_s, progress) as running:
        producer, reader, warm_s = running
        steps, extras = await run_steps(system, status.pid, producer, reader, docs, opts, progress)
        return {
            "warmup_s": warm_s,
            "steps": [{**s.as_dict(), **x} for s, x in zip(steps, extras, strict=True)],
            "duplicates": reader.duplicates,
            "_steps": steps,  # for the ratios and the plot; dropped before writing
        }


async def run_drain(
    system: SystemProcess,
    status: BrokerStatus,
    docs: Sequence[dict],
    events: int,
    timeout_s: float,
    progress: Progress,
    partitions: int = 4,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Load a few warm-up events and then `events` into the system's input topic, start the system, and let it
    drain them into its output topic: the producer is never what limits the rate.

    events/s = results read / (first result of the `events` → last), and steady (10–90 % of the results);
    CPU from the first result to the last, per result read meanwhile. `profile`: record the system with py-spy
    over the same span (collapsed stacks of the threads that hold the GIL)."""
    await ensure_topics(status.bootstrap, system.topics, partitions)
    reader = OutputReader(status.bootstrap, system.output_topic, partitions)
    await reader.start()
    producer = await make_producer(status.bootstrap)
    try:
        warm = make_events(docs, WARMUP_EVENTS, f"{system.name}-wu")
        evs = make_events(docs, events, f"{system.name}-max")
        ids = [e.id for e in evs]
        t0 = time.time()
        sent = [await producer.send(system.input_topic, e.encode(int(t0 * 1000)), key=e.key) for e in warm + evs]
        await asyncio.gather(*sent)
        produced_s = time.time() - t0
        progress(f"{system.name}: {events} events loaded ({rate(len(sent), produced_s):,.0f}/s); starting it")
        system.start()
        started = time.time()
        cpu = Cpu(system.pid, status.pid)
        prefix = f"{system.name}-max-".encode()
        while not any(k.startswith(prefix) for k in reader.read_ms):  # at most the warm-up's results so far
            reader.check()
            system.check_alive()
            if time.time() - started > timeout_s:
                raise RuntimeError(
                    f"{system.name}: no result after {timeout_s:.0f}s; log {system.log_file}:\n" + system.log_tail()
                )
            await asyncio.sleep(0.02)
        c0 = cpu.sample()
        before = reader.count(ids)
        spy = _start_py_spy(system.pid, profile) if profile else None
        complete = await reader.wait_for(ids, timeout_s, system.check_alive)
        c1 = cpu.sample()
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            await asyncio.to_thread(spy.wait, 30)
            progress(f"profile: {profile}")
        read_at = [reader.read_ms[i] / 1000.0 for i in ids if i in reader.read_ms]
        first, last = (min(read_at), max(read_at)) if read_at else (math.nan, math.nan)
        return {
            "events": events,
            "results": len(read_at),
            "complete": complete,
            "produce_events_per_s": rate(len(sent), produced_s),
            "start_to_first_result_s": first - started,
            "events_per_s": rate(len(read_at), last - first),
            "steady_events_per_s": steady_rate(read_at),
            "seconds": last - first,
            "cpu": Cpu.cores(c0, c1),
            # CPU the system spent per event: steadier than events/s on a machine shared with others
            "system_cpu_us_per_event": 1e6 * (c1["system"] - c0["system"]) / max(len(read_at) - before, 1),
            "duplicates": reader.duplicates,
        }
    finally:
        await _stop_all(system, producer, reader)


def _start_py_spy(pid: int | None, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if pid is None or not Path(spy).exists():
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [spy, "record", "-p", str(pid), "--gil", "-r", "200", "-f", "raw", "-o", str(out), "--nonblocking"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the first event arrives
    return proc


def make_system(name: str, status: BrokerStatus, run_dir: Path, opts: CompareOptions) -> SystemProcess:
    return SystemProcess(name, status.url, run_dir, free_port(), opts.late_policy, dict(opts.extra_env))
