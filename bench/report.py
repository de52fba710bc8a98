"""What the bench commands print: `classify` and `model-server` tables, `compare`'s step table per system
and its ratios."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.stats import P99_TARGET_MS, RATIO_TARGET, verdicts


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return f"{x:,.{digits}f}"


def steps_table(systems: Mapping[str, Mapping[str, Any]], budget_ms: float) -> Table:
    t = Table(
        "system",
        "offered/s",
        "achieved/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        f"> {budget_ms:.0f} ms",
        "backlog",
        "cores sys+broker",
        "other procs",
        title="open-loop steps (latency: scheduled send → result read; other procs > 0.2 cores: noisy)",
    )
    for name, r in systems.items():
        for s in r.get("steps", []):
            c = s["cpu"]
            t.add_row(
                name,
                fmt(s["offered_rate"]),
                fmt(s["achieved_rate"]),
                fmt(s["p50_ms"]),
                fmt(s["p95_ms"]),
                fmt(s["p99_ms"]),
                f"{s['deadline_misses']}/{s['sent']}",
                str(s["backlog_at_end"]),
                f"{c['system_cores']:.2f}+{c['broker_cores']:.2f}",
                f"{c['other_processes_cores']:.2f}",
            )
    return t


def ratios_table(ratios: Mapping[str, Mapping[str, float | None]], budget_ms: float) -> Table:
    t = Table(
        "ours vs",
        "ours max/s",
        "theirs max/s",
        "throughput ratio",
        "equal rate/s",
        "p99 ours",
        "p99 theirs",
        title=f"ratios (max rate = highest achieved events/s with p99 ≤ {budget_ms:.0f} ms and nothing lost)",
    )
    for name, r in ratios.items():
        t.add_row(
            "bare model (ceiling)" if name == "ceiling" else name,
            fmt(r.get("ours_max_rate")),
            fmt(r.get("other_max_rate")),
            fmt(r.get("throughput_ratio"), 2),
            fmt(r.get("equal_rate")),
            fmt(r.get("ours_p99_ms")),
            fmt(r.get("other_p99_ms")),
        )
    return t


def print_classify(console: Console, r: dict[str, Any], quiet_cores: float) -> None:
    """The tables of `bench classify`; adds the targets and whether the machine was quiet to `r`."""
    bare, pipe = r["bare_model"], r["pipeline"]
    mr, lat = pipe["max_rate"], pipe["latency"]
    b = r["batch_size"]
    console.print("[bold]3/3 results[/]")
    t = Table("measure", "value", "note", title=f"slmstream bench classify — {r['events']} events, batch {b}")
    t.add_row(
        "bare model",
        f"{fmt(bare['texts_per_s'])} texts/s",
        f"batch {b}, best of {len(bare['repeats_s'])}; {bare['cores']:.2f} cores "
        f"(other processes {bare['other_processes_cores']:.2f})",
    )
    t.add_row("bare model, batch 1", f"{fmt(bare['batch1_texts_per_s'])} texts/s", f"{bare['batch1_texts']} texts")
    t.add_row(
        "pipeline, max rate",
        f"{fmt(mr['events_per_s'])} events/s",
        f"{mr['events']} events in {mr['seconds']:.1f} s (steady {fmt(mr['steady_events_per_s'])}/s)",
    )
    w = mr["worker"]
    t.add_row(
        "  model inside the worker",
        f"{fmt(w['texts_per_model_s'])} texts/s",
        f"busy {w['model_busy_share']:.0%} of the time, mean batch {w['mean_batch']:.1f}, idle between "
        f"batches p50 {fmt(w['idle_between_batches_ms']['p50'], 1)} ms",
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
        f"p50 {fmt(e2e['p50'])} ms",
        f"p95 {fmt(e2e['p95'])}, p99 {fmt(e2e['p99'])}, max {fmt(e2e['max'])} ms",
    )
    t.add_row(
        "  analysis.latency_ms.total",
        f"p50 {fmt(tot['p50'])} ms",
        f"p95 {fmt(tot['p95'])}, p99 {fmt(tot['p99'])}, max {fmt(tot['max'])} ms",
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
            t.add_row(f"    {label}", f"p50 {fmt(q['p50'])} ms", f"p95 {fmt(q['p95'])}, p99 {fmt(q['p99'])} ms")
    lw = lat["worker"]
    t.add_row(
        "  model inside the worker",
        f"{fmt(lw['texts_per_model_s'])} texts/s",
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
    quiet = other <= quiet_cores
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
            f"{quiet_cores}): the figures are noisy; rerun on a quiet machine"
        )
    console.print(f"bench took {r['bench_seconds']:.0f} s")


def print_model_server(console: Console, r: dict[str, Any]) -> None:
    """The tables of `bench model-server`."""
    tr, real = r["transport"], r["real_model_batch"]
    t = Table("measure", "p50", "p99", "note", title=f"transport, batch of {tr['batch']} texts (dim {tr['dim']})")
    for key, label in (
        ("in_process_us", "in-process classify"),
        ("socket_us", "classify via the server"),
        ("socket_encode_only_us", "  encode round trip only"),
    ):
        t.add_row(label, f"{tr[key]['p50']:.0f} µs", f"{tr[key]['p99']:.0f} µs", f"{tr['calls']} batches")
    share = tr["overhead_p50_us"] / (real["p50_ms"] * 1000.0) if real["p50_ms"] else float("nan")
    t.add_row(
        "overhead per batch",
        f"{tr['overhead_p50_us']:.0f} µs",
        "",
        f"x{tr['ratio_p50']:.2f} the no-op call; {share:.1%} of the real model's {real['p50_ms']:.1f} ms",
    )
    console.print(t)
    p = Table(
        "setup",
        "events/s",
        "vs in-process x1",
        "cores",
        "events/core-s",
        "cores per worker",
        "µs/event workers + server",
        "server: batch / requests",
        "RSS MiB",
    )
    for row in r["pipelines"]:
        sb = row.get("server_batches")
        merged = f"{sb['mean_batch']:.1f} / {sb['mean_requests_per_call']:.2f}" if sb else "-"
        rss = f"{sum(row['worker_rss_mib']) + row.get('server_rss_mib', 0.0):.0f}"  # workers + server
        p.add_row(
            row["name"],
            f"{row['events_per_s']:.0f}",
            f"{row['ratio_vs_in_process_x1']:.2f}",
            f"{row['pipeline_cores']:.2f} of {row['machine_cores']:.2f}",
            f"{row['events_per_pipeline_core_s']:.0f}",
            " ".join(f"{c:.2f}" for c in row.get("worker_cores", [])) or "-",
            _per_event(row),
            merged,
            rss,
        )
    console.print(p)
    console.print(
        f"load average at start {r['loadavg_at_start'][0]:.1f}, at end {r['loadavg_at_end'][0]:.1f} on "
        f"{r['cpus']} CPUs: on a shared machine compare ratios from one run, not absolute figures"
    )


def _per_event(row: Mapping[str, Any]) -> str:
    """Worker CPU per event (all workers), plus the model server's when there is one."""
    workers = row.get("workers_cpu_us_per_event")
    if workers is None:
        return "-"
    server = row.get("server_cpu_us_per_event")
    return f"{workers:.1f}" + (f" + {server:.1f}" if server is not None else "")


def identity_table(
    systems: Mapping[str, Mapping[str, Any]],
    ratios: Mapping[str, Mapping[str, float]],
    labels: Mapping[str, str],
) -> Table:
    """One row per system of `bench identity`, with ours / it (events/s and CPU per event)."""
    t = Table(
        "system",
        "events/s",
        "steady/s",
        "CPU µs/event",
        "cores sys+broker",
        "other procs",
        "ours/it events/s",
        "ours/it CPU",
        title="N events drained by each system (events/s: first result → last; CPU: the system's process, per result)",
    )
    for name, r in systems.items():
        c, q = r["cpu"], ratios.get(name, {})
        t.add_row(
            labels.get(name, name),
            fmt(r["events_per_s"]),
            fmt(r["steady_events_per_s"]),
            fmt(r["system_cpu_us_per_event"], 1),
            f"{c['system_cores']:.2f}+{c['broker_cores']:.2f}",
            f"{c['other_processes_cores']:.2f}",
            fmt(q.get("events_per_s"), 2),
            fmt(q.get("system_cpu_us_per_event"), 2),
        )
    return t
