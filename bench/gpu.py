"""`slmstream bench gpu`: the GPU path in one run (infra/gpu/run_gpu_bench.sh runs it on the lent machine).

1. bare model, in this process: the encoder (minilm-l6-fp16 on CUDA) on the bench texts at batch 256 / 1024 /
   2048, texts/s with and without IO binding (tokenization included: `encode` as the model server runs it),
   plus the tokenizer alone and the graph alone on pre-padded feeds (the figures of notes/gpu.md);
2. pipeline: an embedded tansu broker, one `slmstream model-server` holding the model on the GPU, N Faust
   workers sharing it over a Unix socket, and an open-loop load from several sender processes at rising
   rates (loadgen_mp.py), up to past saturation or the time limit; per step events/s, latency p50/p95/p99
   (read time − scheduled send), deadline misses, cores used, the server's merged batches.

Everything goes to one JSON file (written after each phase, so a run cut short still leaves its figures).
`--provider cpu --quick` runs the same code end to end, tiny, on any machine (tests/bench).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.machine import machine_facts as base_machine_facts
from bench.machine import package_version
from bench.model_server import server_batches
from bench.procstat import machine_busy_s, proc_cpu_s
from bench.stats import best_rate
from bench.steps import StepPlan, keep_stepping, plan_steps, saturated, summarize_step
from pipeline.config import Settings

Progress = Callable[[str], None]
GPU_MODEL = "minilm-l6-fp16"
PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")


@dataclass
class GpuBenchOptions:
    provider: str = "cuda"
    model: str = GPU_MODEL
    batches: list[int] = field(default_factory=lambda: [256, 1024, 2048])
    bare_texts: int = 8192  # texts per timed pass of the bare model
    repeats: int = 3
    gpu_sub_batch: int = 1024
    workers: int = 8
    partitions: int = 32
    senders: int = 4
    readers: int = 2
    # offered events/s, one step each; stepping stops one step past saturation
    rates: list[float] = field(default_factory=lambda: [5000, 10000, 20000, 30000, 40000, 50000, 60000, 80000])
    seconds: float = 8.0  # measured part of a step
    warmup_s: float = 2.0
    drain_s: float = 30.0
    past_saturation: int = 1
    max_batch: int = 1024  # each worker's batching.max_batch
    server_max_batch: int = 4096  # texts merged into one model call by the server
    budget_ms: float = 250.0
    time_limit_s: float = 270.0  # no new step starts after this: run_gpu_bench.sh stops the run at 330 s
    skip_pipeline: bool = False
    skip_bare: bool = False


# ---- 1. the bare model ---------------------------------------------------------------------------------------
def measure_bare(settings: Settings, texts: Sequence[str], opts: GpuBenchOptions, progress: Progress) -> dict[str, Any]:
    """texts/s of `encode` per batch size, with and without IO binding; tokenizer alone; graph alone."""
    from pipeline.model.onnx_encoder import load_encoder

    m = settings.model
    t0 = time.perf_counter()
    enc = load_encoder(
        m.cache_dir,
        opts.model,
        threads=m.threads,
        max_tokens=m.max_tokens,
        provider=opts.provider,
        sub_batch=m.sub_batch,
        gpu_sub_batch=opts.gpu_sub_batch,
    )
    out: dict[str, Any] = {
        "model": enc.name,
        "hash": enc.content_hash,
        "provider": enc.provider,
        "load_s": time.perf_counter() - t0,
        "sub_batch": enc.sub_batch,
        "texts": len(texts),
        "encode": [],
    }
    default_binding = enc.io_binding
    try:
        # embeddings with and without IO binding must agree (same graph, same provider)
        probe = list(texts[:64])
        enc.io_binding = False
        plain = enc.encode(probe)
        enc.io_binding = True
        bound = enc.encode(probe)
        out["io_binding_max_abs_diff"] = float(np.abs(plain - bound).max())
        for batch in opts.batches:
            for binding in (False, True):
                enc.io_binding = binding
                _passes(enc.encode, texts[: batch * 2], batch)  # warm-up: allocations, kernel choice
                times = []
                for r in range(opts.repeats):
                    progress(
                        f"bare model: batch {batch}, io binding {'on' if binding else 'off'}, {r + 1}/{opts.repeats}"
                    )
                    times.append(_passes(enc.encode, texts, batch))
                out["encode"].append(
                    {
                        "batch": batch,
                        "io_binding": binding,
                        "seconds": times,
                        "texts_per_s": best_rate(len(texts), times),
                    }
                )
        enc.io_binding = default_binding
        out["tokenizer_texts_per_s"] = _tokenizer_rate(enc, texts, max(opts.batches))
        out["graph_only"] = _graph_only(enc, max(opts.batches), opts.repeats)
    finally:
        del enc
        gc.collect()  # the model server loads its own copy next
    return out


def _passes(call: Callable[[Sequence[str]], object], texts: Sequence[str], batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        call(texts[i : i + batch])
    return time.perf_counter() - t0


def _tokenizer_rate(enc: Any, texts: Sequence[str], batch: int) -> float:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            enc.tokenize(texts[i : i + batch])
        times.append(time.perf_counter() - t0)
    return best_rate(len(texts), times)


def _graph_only(enc: Any, batch: int, repeats: int, seq: int = 32) -> dict[str, Any]:
    """The session alone on one pre-padded (batch, seq) input: numpy in/out, then IO binding with the inputs
    bound once and the output left on the device (notes/gpu.md measured it this way)."""
    import onnxruntime as ort

    session = enc._session  # noqa: SLF001 (the bench reaches into its own encoder)
    feeds = enc._pad([[101] + [2000 + (i % 1000)] * (seq - 2) + [102] for i in range(batch)])  # noqa: SLF001  the bench times its own encoder's parts
    output = enc._output  # noqa: SLF001  the bench times its own encoder's parts
    calls = 20

    def timed(fn: Callable[[], object]) -> float:
        fn()
        fn()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, time.perf_counter() - t0)
        return batch * calls / best

    numpy_rate = timed(lambda: session.run([output], feeds))
    binding = session.io_binding()
    device = "cuda" if enc.on_gpu else "cpu"
    for name, arr in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, device, 0))
    binding.bind_output(output, device)
    bound_rate = timed(lambda: session.run_with_iobinding(binding))
    return {"batch": batch, "seq": seq, "numpy_texts_per_s": numpy_rate, "io_binding_texts_per_s": bound_rate}


# ---- 2. the pipeline -----------------------------------------------------------------------------------------
def _worker_env(settings: Settings, status_url: str, socket_path: Path, opts: GpuBenchOptions, run_id: str) -> dict:
    return {
        "SLMSTREAM_BROKER": status_url,
        "SLMSTREAM_APP_ID": f"{run_id}-workers",
        "SLMSTREAM_LOG_LEVEL": "warning",
        "SLMSTREAM_LOG_FORMAT": "json",
        "SLMSTREAM_TOPICS__EVENTS": f"{run_id}-in",
        "SLMSTREAM_TOPICS__ENRICHED": f"{run_id}-out",
        "SLMSTREAM_TOPICS__DLQ": f"{run_id}-dlq",
        "SLMSTREAM_TOPICS__DEFERRED": f"{run_id}-deferred",
        "SLMSTREAM_TOPICS__PARTITIONS": str(opts.partitions),
        "SLMSTREAM_BATCHING__LATE_POLICY": "process",  # classify each event once, late or not
        "SLMSTREAM_BATCHING__MAX_BATCH": str(opts.max_batch),
        "SLMSTREAM_BATCHING__QUEUE_LIMIT": str(max(settings.batching.queue_limit, 4 * opts.max_batch)),
        "SLMSTREAM_BATCHING__BUDGET_MS": str(opts.budget_ms),
        "SLMSTREAM_MODEL__ENCODER": opts.model,
        "SLMSTREAM_MODEL__SERVER_SOCKET": str(socket_path),
        "SLMSTREAM_SUMMARIES__ENABLED": "false",
        "SLMSTREAM_ALERTS__ENABLED": "false",
    }


def run_pipeline(
    settings: Settings,
    opts: GpuBenchOptions,
    run_dir: Path,
    run_id: str,
    docs: list[dict],
    progress: Progress,
    results: dict[str, Any],
    save: Callable[[], None],
    deadline: float,
) -> None:
    """Broker, model server, workers, load; fills results["pipeline"] step by step."""
    from bench.loadgen_mp import MultiProcessLoad
    from bench.machine import BenchBroker, free_port
    from bench.model_server import ModelServerProcess, rss_mib
    from pipeline.kafka_client import ensure_topics
    from pipeline.worker_process import WorkerProcess

    pipe: dict[str, Any] = {"steps": [], "workers": opts.workers, "partitions": opts.partitions}
    results["pipeline"] = pipe
    broker = BenchBroker("tansu", run_dir)
    # a short private folder: a Unix socket path has at most ~107 bytes, and run_dir may be long
    socket_path = Path(tempfile.mkdtemp(prefix="slmgpu-")) / "model.sock"
    server_env = {
        "SLMSTREAM_LOG_FORMAT": "json",
        "SLMSTREAM_LOG_LEVEL": "info",  # a line per model call: the merged batches
        "SLMSTREAM_MODEL__PROVIDER": opts.provider,
        "SLMSTREAM_MODEL__GPU_SUB_BATCH": str(opts.gpu_sub_batch),
        "SLMSTREAM_MODEL__ENCODER": opts.model,
    }
    server = ModelServerProcess(socket_path, run_dir / "model-server.log", server_env)
    workers: list[WorkerProcess] = []
    load: MultiProcessLoad | None = None
    try:
        status = broker.start()
        pipe["broker_pid"] = status.pid
        env = _worker_env(settings, status.url, socket_path, opts, run_id)
        t = (env["SLMSTREAM_TOPICS__EVENTS"], env["SLMSTREAM_TOPICS__ENRICHED"])
        topics = [*t, env["SLMSTREAM_TOPICS__DLQ"], env["SLMSTREAM_TOPICS__DEFERRED"]]
        asyncio.run(ensure_topics(status.bootstrap, topics, opts.partitions))
        progress(f"model server: {opts.model} on {opts.provider} ({socket_path})")
        t0 = time.monotonic()
        server.start(["--model", opts.model, "--max-batch", str(opts.server_max_batch)])
        server.wait_ready(180)
        pipe["server_start_s"] = time.monotonic() - t0
        progress(f"{opts.workers} workers, {opts.partitions} partitions")
        t0 = time.monotonic()
        for w in range(opts.workers):
            wp = WorkerProcess(env, run_dir / f"worker-{w}.log", run_dir / f"worker-{w}-data", free_port())
            workers.append(wp)
            wp.start()
        for wp in workers:
            wp.wait_ready(240)
        pipe["workers_start_s"] = time.monotonic() - t0
        load = MultiProcessLoad(status.bootstrap, t[0], t[1], opts.partitions, docs, opts.senders, opts.readers)
        load.start()

        def alive() -> None:
            server.check_alive()
            for wp in workers:
                wp.check_alive()

        # warm-up: every worker joined the group and got partitions, the model is warm
        warm = max(opts.workers * 64, 256)
        load.send_step("wu", warm, min(2000.0, opts.rates[0]))
        load.wait_sent(120)
        if not load.wait_for("wu", warm, 180, alive):
            raise RuntimeError(f"warm-up: {load.count('wu')}/{warm} results after 180 s")
        pids = {"workers": [wp.pid for wp in workers], "server": server.pid, "broker": status.pid}
        steps = []
        for k, plan in enumerate(plan_steps(opts.rates, opts.seconds, opts.warmup_s)):
            if time.monotonic() > deadline:
                progress(f"time limit reached: no step at {plan.rate:.0f}/s")
                pipe["stopped_by_time_limit"] = True
                break
            step, extra = _one_step(load, plan, f"s{k}", opts, pids, server.log_file, alive, progress)
            steps.append(step)
            pipe["steps"].append({**step.as_dict(), **extra, "saturated": saturated(step, opts.budget_ms)})
            save()
            if not keep_stepping(steps, opts.budget_ms, opts.past_saturation):
                break
        pipe["duplicates"] = load.duplicates()
        pipe["worker_rss_mib"] = [round(rss_mib(p), 1) for p in pids["workers"]]
        pipe["server_rss_mib"] = round(rss_mib(server.pid), 1)
        ok = [s for s in steps if not saturated(s, opts.budget_ms)]
        pipe["best_unsaturated_events_per_s"] = max((s.achieved_rate for s in ok), default=0.0)
        pipe["max_achieved_events_per_s"] = max((s.achieved_rate for s in steps), default=0.0)
    finally:
        if load is not None:
            load.close()
        for wp in workers:
            with contextlib.suppress(Exception):
                wp.stop(15)
        with contextlib.suppress(Exception):
            server.stop()
        with contextlib.suppress(Exception):
            broker.stop()
        shutil.rmtree(socket_path.parent, ignore_errors=True)


def _one_step(
    load: Any,
    plan: StepPlan,
    prefix: str,
    opts: GpuBenchOptions,
    pids: dict[str, Any],
    server_log: Path,
    alive: Callable[[], None],
    progress: Progress,
) -> tuple[Any, dict[str, Any]]:
    progress(f"{plan.rate:.0f} events/s for {opts.warmup_s:.0f}+{opts.seconds:.0f} s ({plan.total} events)")
    all_pids = [*pids["workers"], pids["server"], pids["broker"]]
    offset = server_log.stat().st_size
    start = load.send_step(prefix, plan.total, plan.rate)
    measured_from = start + plan.warmup_events / plan.rate
    # CPU over the measured part of the sending
    time.sleep(max(measured_from - time.time(), 0.0))
    c0 = {p: proc_cpu_s(p) for p in all_pids}
    m0, w0 = machine_busy_s(), time.time()
    reports = load.wait_sent(opts.warmup_s + opts.seconds + 120)
    c1 = {p: proc_cpu_s(p) for p in all_pids}
    m1, w1 = machine_busy_s(), time.time()
    backlog = plan.total - load.count(prefix)
    load.wait_for(prefix, plan.total, opts.drain_s, alive)
    read_ms = load.take(prefix)
    scheduled = {
        f"{prefix}-{i:06d}".encode(): (start + i / plan.rate) * 1000.0 for i in range(plan.warmup_events, plan.total)
    }
    worst_lag = max((r["worst_lag_ms"] for r in reports), default=0.0)
    step = summarize_step(
        plan.rate, scheduled, read_ms, opts.budget_ms, backlog_at_end=backlog, worst_send_lag_ms=worst_lag
    )
    wall = max(w1 - w0, 1e-9)
    cpu = {
        "workers_cores": sum(c1[p] - c0[p] for p in pids["workers"]) / wall,
        "server_cores": (c1[pids["server"]] - c0[pids["server"]]) / wall if pids["server"] else 0.0,
        "broker_cores": (c1[pids["broker"]] - c0[pids["broker"]]) / wall if pids["broker"] else 0.0,
        "machine_cores": (m1 - m0) / wall,
    }
    send_end = max((r["end_s"] for r in reports), default=start)
    extra = {
        "cpu": cpu,
        "send_rate": plan.total / max(send_end - start, 1e-9),
        "server_batches": server_batches(server_log, offset),
    }
    progress(
        f"   achieved {step.achieved_rate:.0f}/s, p50 {step.p50_ms:.0f} p99 {step.p99_ms:.0f} ms, misses "
        f"{step.deadline_misses}/{step.sent}, backlog {backlog}, worst send lag {worst_lag:.0f} ms, cores "
        f"{cpu['machine_cores']:.1f}"
    )
    return step, extra


# ---- the run ---------------------------------------------------------------------------------------------------
def machine_facts(provider: str) -> dict[str, Any]:
    """bench.machine's facts, plus the onnxruntime package and providers, and the GPU as nvidia-smi names it."""
    import onnxruntime as ort

    facts = base_machine_facts()
    facts.update(
        onnxruntime_package="onnxruntime-gpu" if package_version("onnxruntime-gpu") else "onnxruntime",
        providers_available=ort.get_available_providers(),
        provider_asked=provider,
    )
    with contextlib.suppress(Exception):
        import subprocess

        facts["gpu"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    return facts


def run_gpu_bench(
    settings: Settings, opts: GpuBenchOptions, docs: list[dict], out: Path, run_dir: Path, progress: Progress
) -> dict:
    from bench.events import cycled_texts

    t_run = time.monotonic()
    deadline = t_run + opts.time_limit_s
    results: dict[str, Any] = {
        "bench": "gpu",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(opts.provider),
        "options": dict(opts.__dict__),
    }

    def save() -> None:
        results["bench_seconds"] = time.monotonic() - t_run
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")

    run_id = f"gpu-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"
    try:
        if not opts.skip_bare:
            progress(f"1/2 bare model {opts.model} on {opts.provider}: {opts.bare_texts} texts, batches {opts.batches}")
            results["bare_model"] = measure_bare(settings, cycled_texts(docs, opts.bare_texts), opts, progress)
            save()
            for row in results["bare_model"]["encode"]:
                progress(f"   batch {row['batch']}, io binding {row['io_binding']}: {row['texts_per_s']:.0f} texts/s")
            g = results["bare_model"]["graph_only"]
            progress(
                f"   graph only, batch {g['batch']} x {g['seq']} tokens: {g['numpy_texts_per_s']:.0f} texts/s numpy, "
                f"{g['io_binding_texts_per_s']:.0f} io binding; tokenizer "
                f"{results['bare_model']['tokenizer_texts_per_s']:.0f} texts/s"
            )
        if not opts.skip_pipeline:
            progress(f"2/2 pipeline: tansu + model server + {opts.workers} workers, rates {opts.rates}")
            run_pipeline(settings, opts, run_dir / run_id, run_id, docs, progress, results, save, deadline)
    except Exception as exc:  # the JSON says what failed, with what was measured before
        results["error"] = f"{type(exc).__name__}: {exc}"
        progress(f"[red]failed:[/] {results['error']}")
    save()
    return results


def quick_options(provider: str, model: str) -> GpuBenchOptions:
    """A tiny run of every part: for a CPU machine, a test, a smoke check before the device run."""
    return GpuBenchOptions(
        provider=provider,
        model=model,
        batches=[8, 32],
        bare_texts=128,
        repeats=1,
        gpu_sub_batch=32,
        workers=2,
        partitions=4,
        senders=2,
        readers=2,
        rates=[50, 100],
        seconds=2.0,
        warmup_s=1.0,
        drain_s=30.0,
        max_batch=32,
        server_max_batch=64,
        time_limit_s=120.0,
    )
