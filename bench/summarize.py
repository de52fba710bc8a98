"""`slmstream bench summarize`: window summaries under load, in one run on a fresh broker and worker.

    bench ─events at --rate, --keys keys→ events ─→ worker (classify → analyze) ─→ events.summaries ─→ bench

Events carry `ts` = their send time, so windows close live. The run streams for --seconds, then waits for the
last windows to close and be summarized (window + grace + budget). It reports summaries/s (over the time the
worker wrote them, by their Kafka timestamps), the generator's new tokens/s (from the worker's `generated` log
lines: per second of generator work and per second of the run), p50/p95 summary latency (window close →
record, as the record says) and the share of extractive summaries: of all windows, and of the windows big
enough for the generator (the fallbacks proper). Not a test: the figures depend on the machine and on what
else runs on it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.machine import BenchBroker, free_port
from bench.procstat import machine_busy_s, proc_cpu_s
from pipeline.config import Settings
from pipeline.kafka_client import ensure_topics
from pipeline.worker_process import WorkerProcess


@dataclass
class SummarizeOptions:
    rate: float
    keys: int
    seconds: float
    window_s: float
    budget_s: float
    engine: str
    run_dir: Path
    texts: list[str]


def bench_env(opts: SummarizeOptions, prefix: str, broker_url: str) -> dict[str, str]:
    return {
        "SLMSTREAM_BROKER": broker_url,
        "SLMSTREAM_APP_ID": f"bench-summarize-{prefix}",
        "SLMSTREAM_LOG_FORMAT": "json",
        "SLMSTREAM_TOPICS__EVENTS": f"{prefix}",
        "SLMSTREAM_TOPICS__ENRICHED": f"{prefix}.enriched",
        "SLMSTREAM_TOPICS__DLQ": f"{prefix}.dlq",
        "SLMSTREAM_TOPICS__DEFERRED": f"{prefix}.deferred",
        "SLMSTREAM_TOPICS__SUMMARIES": f"{prefix}.summaries",
        "SLMSTREAM_TOPICS__STATS": f"{prefix}.stats",
        "SLMSTREAM_TOPICS__ALERTS": f"{prefix}.alerts",
        "SLMSTREAM_SUMMARIES__ENABLED": "true",
        "SLMSTREAM_SUMMARIES__KEY": "key",
        "SLMSTREAM_SUMMARIES__WINDOW_S": f"{opts.window_s:g}",
        "SLMSTREAM_SUMMARIES__BUDGET_S": f"{opts.budget_s:g}",
    }


async def _stream(bootstrap: str, topic: str, opts: SummarizeOptions) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        n = int(opts.rate * opts.seconds)
        start = time.time()
        pending = []
        for i in range(n):
            delay = start + i / opts.rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            doc = {
                "id": f"b-{i:07d}",
                "text": opts.texts[i % len(opts.texts)],
                "ts": int(time.time() * 1000),
                "key": f"key-{i % opts.keys:04d}",
                "source": "bench",
            }
            pending.append(await producer.send(topic, orjson.dumps(doc)))
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return n
    finally:
        await producer.stop()


async def _read(bootstrap: str, topic: str, until: float, quiet_s: float) -> list[dict[str, Any]]:
    """Summaries from the start of `topic` until `until` (wall clock), or `quiet_s` with nothing new after it."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    last_new = time.time()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    doc = orjson.loads(r.value)
                    doc["_sent_at"] = r.timestamp / 1000.0  # when the worker produced it (producer time)
                    out.append(doc)
                    last_new = time.time()
            now = time.time()
            if now > until and now - last_new > quiet_s:
                return out
    finally:
        await consumer.stop()


def generated_lines(log_file: Path) -> list[dict[str, Any]]:
    """The worker's `generated` log lines (one per generator call)."""
    out = []
    for line in log_file.read_bytes().splitlines():
        if b'"generated"' not in line:
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if doc.get("event") == "generated":
            out.append(doc)
    return out


def report(summaries: list[dict[str, Any]], calls: list[dict[str, Any]], min_events: int) -> dict[str, Any]:
    n = len(summaries)
    methods = Counter(s["method"] for s in summaries)
    eligible = [s for s in summaries if s["count"] >= min_events]
    latency = np.array([s["latency_ms"] for s in summaries], dtype=np.float64)
    # Over the time the worker was writing summaries (first to last record, by their Kafka timestamps).
    span = max(s["_sent_at"] for s in summaries) - min(s["_sent_at"] for s in summaries) if n > 1 else 0.0
    new_tokens = sum(c.get("new_tokens", 0) for c in calls)
    gen_s = sum(c.get("prefill_ms", 0) + c.get("decode_ms", 0) for c in calls) / 1000.0
    return {
        "summaries": n,
        "summaries_per_s": n / span if span > 0 else None,
        "abstractive": methods["abstractive"],
        "extractive": methods["extractive"],
        "extractive_share": methods["extractive"] / n if n else None,
        "fallback_share": (sum(s["method"] == "extractive" for s in eligible) / len(eligible)) if eligible else None,
        "budget_met_share": sum(s["budget_met"] for s in summaries) / n if n else None,
        "latency_ms": {
            "p50": float(np.percentile(latency, 50)) if n else None,
            "p95": float(np.percentile(latency, 95)) if n else None,
            "max": float(latency.max()) if n else None,
        },
        "generator": {
            "calls": len(calls),
            "prompts": sum(c.get("prompts", 0) for c in calls),
            "new_tokens": new_tokens,
            "busy_s": round(gen_s, 2),
            "new_tokens_per_busy_s": new_tokens / gen_s if gen_s > 0 else None,
            "new_tokens_per_s_wall": new_tokens / span if span > 0 else None,
        },
    }


def run_summarize(settings: Settings, opts: SummarizeOptions, note: Any = print) -> dict[str, Any]:
    prefix = f"bs-{uuid.uuid4().hex[:8]}"
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    broker = BenchBroker(opts.engine, opts.run_dir)
    worker: WorkerProcess | None = None
    try:
        status = broker.start()
        env = bench_env(opts, prefix, status.url)
        topics = [env[k] for k in env if k.startswith("SLMSTREAM_TOPICS__")]
        asyncio.run(ensure_topics(status.bootstrap, topics, settings.topics.partitions))
        worker = WorkerProcess(env, opts.run_dir / "worker.log", opts.run_dir / "worker-data", free_port())
        note("starting the worker (classifier + generator)")
        worker.start()
        worker.wait_ready(120)
        grace = settings.summaries.grace_s
        note(f"streaming {opts.rate:g} events/s over {opts.keys} keys for {opts.seconds:g} s")
        cpu0, busy0, t0 = proc_cpu_s(worker.pid), machine_busy_s(), time.time()
        sent = asyncio.run(_stream(status.bootstrap, prefix, opts))
        until = time.time() + opts.window_s + grace + opts.budget_s + 5
        note(f"sent {sent}; waiting for the last windows to close and be summarized")
        summaries = asyncio.run(_read(status.bootstrap, env["SLMSTREAM_TOPICS__SUMMARIES"], until, 3.0))
        wall = time.time() - t0
        worker_cpu = proc_cpu_s(worker.pid) - cpu0
        machine = machine_busy_s() - busy0
        result = report(summaries, generated_lines(worker.log_file), settings.summaries.min_events_abstractive)
        result.update(
            {
                "events": sent,
                "rate": opts.rate,
                "keys": opts.keys,
                "window_s": opts.window_s,
                "budget_s": opts.budget_s,
                "engine": opts.engine,
                "generator": result["generator"] | {"model": settings.summaries.generator},
                "cpu": {
                    "wall_s": round(wall, 1),
                    "worker_cores": round(worker_cpu / wall, 2),
                    "machine_cores": round(machine / wall, 2),
                },
            }
        )
        return result
    finally:
        if worker is not None:
            worker.stop(30)
        broker.stop()
