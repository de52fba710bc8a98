"""`slmstream bench model-server` (the command: bench/cli.py): what sharing one model process costs and buys.

1. transport overhead per batch: `classify` of a batch of texts through the socket, against a no-op model
   (the identity encoder, at the real model's width), vs the same classifier in-process; plus the real model's
   time for such a batch, to put the overhead in proportion;
2. pipeline throughput (max rate, a fresh broker): 1 in-process worker, then 1, 2 and 4 workers sharing one
   model server, each on fresh topics; events/s, cores used, the server's merged batches, and memory.

The no-op end of step 1 is a model server with the identity model in its own process, as a real server
is: bench/noop_server.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from bench.events import BenchEvent, make_events
from bench.procstat import machine_busy_s, proc_cpu_s
from bench.stats import percentile, rate, summarize
from pipeline.child_process import ChildProcess
from pipeline.config import Settings
from pipeline.model.server import server_answers
from pipeline.worker_process import WorkerProcess

Progress = Callable[[str], None]
console = Console()


class ModelServerProcess(ChildProcess):
    """A model server in its own process group: `slmstream model-server`, or (identity_dim) the no-op one."""

    def __init__(
        self, socket_path: Path, log_file: Path, env: dict[str, str] | None = None, *, identity_dim: int | None = None
    ) -> None:
        super().__init__("model server", log_file, env)
        self.socket_path = socket_path
        if identity_dim is None:
            exe = Path(sys.executable).with_name("slmstream")
            self.cmd = [str(exe), "model-server", "--socket", str(socket_path)]
        else:
            self.cmd = [sys.executable, "-m", "bench.noop_server", "--socket", str(socket_path)]
            self.cmd += ["--dim", str(identity_dim)]

    def start(self, extra_args: Sequence[str] = ()) -> None:
        self.socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.spawn([*self.cmd, *extra_args])

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if server_answers(self.socket_path, 0.5):
                return
            time.sleep(0.1)
        raise self.error(f"model server not answering on {self.socket_path} after {timeout:.0f}s")


def rss_mib(pid: int | None) -> float:
    """Resident memory of a process in MiB (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


# ---- 1. transport overhead ---------------------------------------------------------------------------------
async def _time_calls(call: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


async def measure_transport(
    settings: Settings, texts: Sequence[str], run_dir: Path, *, calls: int = 400, dim: int = 384, progress: Progress
) -> dict[str, Any]:
    """Per-batch time of `classify(texts)`: in-process vs through the socket, both with the identity model."""
    from pipeline.model.classifier import LabelClassifier
    from pipeline.model.identity import IDENTITY, IdentityEncoder
    from pipeline.model.remote import ModelServerClient, connect_remote_worker
    from pipeline.model.worker import ModelWorker

    c = settings.classifier
    local = ModelWorker(
        LabelClassifier(
            IdentityEncoder(dim), settings.labels, min_confidence=c.min_confidence, temperature=c.temperature
        )
    )
    server = ModelServerProcess(run_dir / "noop.sock", run_dir / "noop-server.log", identity_dim=dim)
    server.start()
    client = ModelServerClient(server.socket_path, wait_s=10)
    try:
        server.wait_ready(30)
        remote = await connect_remote_worker(settings, IDENTITY, client)
        batch = list(texts)
        for w in (local, remote):  # warm-up: threads started, connection open
            await _time_calls(lambda w=w: w.classify(batch), 30)
        local_s: list[float] = []
        remote_s: list[float] = []
        raw_s: list[float] = []
        # interleaved blocks: load from other processes hits both sides alike
        block = 50
        progress(f"transport: {calls} batches of {len(batch)} texts each way, interleaved in blocks of {block}")
        for _ in range(max(calls // block, 1)):
            local_s += await _time_calls(lambda: local.classify(batch), block)
            remote_s += await _time_calls(lambda: remote.classify(batch), block)
            raw_s += await _time_calls(lambda: client.encode(IDENTITY, batch), block)
    finally:
        await client.close()
        server.stop()
        local.close()
    loc, rem, raw = (summarize([s * 1e6 for s in v]) for v in (local_s, remote_s, raw_s))
    return {
        "batch": len(texts),
        "dim": dim,
        "calls": len(local_s),
        "in_process_us": loc,
        "socket_us": rem,
        "socket_encode_only_us": raw,  # the client's encode, without the classifier and its thread
        "overhead_p50_us": rem["p50"] - loc["p50"],
        "ratio_p50": rem["p50"] / loc["p50"] if loc["p50"] else float("nan"),
    }


def measure_real_batch(settings: Settings, texts: Sequence[str], repeats: int = 20) -> dict[str, float]:
    """The real model's time for one batch in-process (for the overhead's share of a model call)."""
    from pipeline import logs
    from pipeline.runtime import load_classifier

    logs.configure("console", "warning")  # importing the runtime set up the worker's logging
    classifier = load_classifier(settings, settings.model.encoder)
    for _ in range(3):
        classifier.classify(texts)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        classifier.classify(texts)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"p50_ms": percentile(times, 50), "min_ms": min(times)}


# ---- 2. pipeline throughput ----------------------------------------------------------------------------------
@dataclass
class Setup:
    name: str
    workers: int
    shared: bool  # workers use the model server


SETUPS = [Setup("in-process x1", 1, False), *(Setup(f"server x{n}", n, True) for n in (1, 2, 4))]


@dataclass
class _Procs:
    workers: list[WorkerProcess] = field(default_factory=list)
    server: ModelServerProcess | None = None

    def check_alive(self) -> None:  # what Collector.wait_for calls
        for w in self.workers:
            w.check_alive()
        if self.server is not None:
            self.server.check_alive()


def _topic_settings(settings: Settings, prefix: str) -> Settings:
    t = settings.topics.model_copy(
        update={
            "events": f"{prefix}.events",
            "enriched": f"{prefix}.enriched",
            "dlq": f"{prefix}.dlq",
            "deferred": f"{prefix}.deferred",
        }
    )
    return settings.model_copy(update={"topics": t})


def server_batch_lines(log_file: Path, offset: int) -> list[dict[str, Any]]:
    """The model server's `model_server_batch` log lines (one per model call) written since byte `offset`."""
    found = []
    with log_file.open("rb") as f:
        f.seek(offset)
        for line in f:
            with contextlib.suppress(orjson.JSONDecodeError):
                d = orjson.loads(line)
                if isinstance(d, dict) and d.get("event") == "model_server_batch":
                    found.append(d)
    return found


def server_batches(log_file: Path, offset: int) -> dict[str, Any]:
    """The model server's merged calls logged since `offset` (its JSON log: one line per model call)."""
    calls = server_batch_lines(log_file, offset)
    sizes = [d["size"] for d in calls]
    requests = [d["requests"] for d in calls]
    model_ms = [d["model_ms"] for d in calls if "model_ms" in d]
    n = len(sizes)
    return {
        "calls": n,
        "mean_batch": sum(sizes) / n if n else 0.0,
        "max_batch": max(sizes, default=0),
        "mean_requests_per_call": sum(requests) / n if n else 0.0,
        "mean_clients_per_call": sum(d.get("clients", 1) for d in calls) / n if n else 0.0,
        "merged_share": sum(r > 1 for r in requests) / n if n else 0.0,
        "model_ms": summarize(model_ms),
        "texts_per_model_s": sum(sizes) / (sum(model_ms) / 1000.0) if model_ms and sum(model_ms) else 0.0,
    }


async def _max_rate_step(
    settings: Settings, bootstrap: str, procs: _Procs, docs: list[dict], events: int, batch: int, tag: str
) -> dict[str, Any]:
    from bench.loadgen import make_producer
    from bench.pipeline import Collector, blast

    collector = Collector(settings, bootstrap)
    await collector.start()
    producer = await make_producer(bootstrap)
    try:
        warm = make_events(docs, batch * 2 * max(len(procs.workers), 1), f"wu{tag}")
        await blast(producer, settings.topics.events, warm)
        if not await collector.wait_for(f"wu{tag}", len(warm), 120, procs.check_alive):
            raise RuntimeError(f"warm-up: {collector.count(f'wu{tag}')}/{len(warm)} results after 120 s")
        await asyncio.sleep(1.0)
        pids = [w.pid for w in procs.workers] + ([procs.server.pid] if procs.server else [])
        each0 = [proc_cpu_s(p) for p in pids]
        cpu0, machine0, wall0 = sum(each0), machine_busy_s(), time.time()
        todo: list[BenchEvent] = make_events(docs, events, f"tp{tag}")
        first, _ = await blast(producer, settings.topics.events, todo)
        if not await collector.wait_for(f"tp{tag}", events, max(120.0, events * 0.05), procs.check_alive):
            raise RuntimeError(f"max-rate step: only {collector.count(f'tp{tag}')}/{events} results read")
        times = [t for t, _ in collector.records(f"tp{tag}").values()]
        wall = time.time() - wall0
        each1 = [proc_cpu_s(p) for p in pids]
        cpu1, machine1 = sum(each1), machine_busy_s()
        each = [b - a for a, b in zip(each0, each1, strict=True)]
        n_workers = len(procs.workers)
        return {
            "events": events,
            "seconds": max(times) - first,
            "events_per_s": rate(events, max(times) - first),
            "pipeline_cores": (cpu1 - cpu0) / wall,  # workers + model server
            # on a shared machine more processes get a bigger share of the cores: this one compares setups fairly
            "events_per_pipeline_core_s": events / max(cpu1 - cpu0, 1e-9),
            "machine_cores": (machine1 - machine0) / wall,
            # per process: each worker's cores; the workers' CPU (all of them) and the model server's per event
            "worker_cores": [c / wall for c in each[:n_workers]],
            "workers_cpu_us_per_event": 1e6 * sum(each[:n_workers]) / events,
            "server_cores": each[n_workers] / wall if len(each) > n_workers else None,
            "server_cpu_us_per_event": 1e6 * each[n_workers] / events if len(each) > n_workers else None,
            "duplicates": collector.duplicates,
        }
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        with contextlib.suppress(Exception):
            await collector.stop()


def measure_pipelines(
    settings: Settings,
    engine: str,
    run_dir: Path,
    run_id: str,
    docs: list[dict],
    events: int,
    batch: int,
    progress: Progress,
    setups: Sequence[Setup] = tuple(SETUPS),
) -> list[dict[str, Any]]:
    from bench.machine import BenchBroker, free_port
    from pipeline.kafka_client import ensure_topics

    broker = BenchBroker(engine, run_dir)
    status = broker.start()
    server_env = {"SLMSTREAM_LOG_FORMAT": "json", "SLMSTREAM_LOG_LEVEL": "info"}  # a line per merged call
    server = ModelServerProcess(run_dir / "sock" / "model.sock", run_dir / "model-server.log", server_env)
    results: list[dict[str, Any]] = []
    procs = _Procs()
    try:
        base_env = {
            "SLMSTREAM_BROKER": status.url,
            "SLMSTREAM_LOG_LEVEL": "warning",
            "SLMSTREAM_LOG_FORMAT": "json",
            "SLMSTREAM_BATCHING__LATE_POLICY": "process",  # classify each event once, late or not
            "SLMSTREAM_BATCHING__MAX_BATCH": str(batch),
        }
        if any(s.shared for s in setups):
            progress(f"model server: {settings.model.encoder} on {server.socket_path}")
            server.start()
            server.wait_ready(120)
        for i, setup in enumerate(setups):
            s = _topic_settings(settings, f"{run_id}-{i}")
            t = s.topics
            asyncio.run(ensure_topics(status.bootstrap, [t.events, t.enriched, t.dlq, t.deferred], t.partitions))
            env = {
                **base_env,
                "SLMSTREAM_APP_ID": f"{run_id}-{i}",
                "SLMSTREAM_TOPICS__EVENTS": t.events,
                "SLMSTREAM_TOPICS__ENRICHED": t.enriched,
                "SLMSTREAM_TOPICS__DLQ": t.dlq,
                "SLMSTREAM_TOPICS__DEFERRED": t.deferred,
            }
            if setup.shared:
                env["SLMSTREAM_MODEL__SERVER_SOCKET"] = str(server.socket_path)
            progress(f"{setup.name}: starting {setup.workers} worker(s)")
            procs = _Procs(server=server if setup.shared else None)
            for w in range(setup.workers):
                wp = WorkerProcess(env, run_dir / f"{i}-worker-{w}.log", run_dir / f"{i}-worker-{w}-data", free_port())
                procs.workers.append(wp)
                wp.start()
            for wp in procs.workers:
                wp.wait_ready(180)
            offset = server.log_file.stat().st_size if setup.shared else 0
            progress(f"{setup.name}: {events} events at max rate")
            step = asyncio.run(_max_rate_step(s, status.bootstrap, procs, docs, events, batch, str(i)))
            step.update(name=setup.name, workers=setup.workers, shared=setup.shared)
            step["worker_rss_mib"] = [round(rss_mib(w.pid), 1) for w in procs.workers]
            if setup.shared:
                step["server_rss_mib"] = round(rss_mib(server.pid), 1)
                step["server_batches"] = server_batches(server.log_file, offset)
            results.append(step)
            progress(f"{setup.name}: {step['events_per_s']:.0f} events/s")
            for wp in procs.workers:
                wp.stop(30)
            procs.workers.clear()
    finally:
        for wp in procs.workers:
            with contextlib.suppress(Exception):
                wp.stop(10)
        server.stop()
        broker.stop()
    base = next((r["events_per_s"] for r in results if not r["shared"]), None)
    for r in results:
        r["ratio_vs_in_process_x1"] = r["events_per_s"] / base if base else None
    return results
