"""`slmstream demo`: broker + worker + sample events, results live, a summary, and nothing left running."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import typer
from aiokafka import AIOKafkaConsumer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from pipeline.broker import BrokerError, EmbeddedBroker
from pipeline.cli.analytics_render import render_analytics, render_analytics_line
from pipeline.cli.common import fail, settings_or_exit
from pipeline.cli.topics import _produce, render, security_kwargs_or_exit
from pipeline.config import Settings
from pipeline.kafka_client import ensure_topics
from pipeline.samples import MALFORMED_EVENTS, SAMPLE_EVENTS, SPIKE_EVENTS, sample_lines
from pipeline.worker_process import WorkerError, WorkerProcess

console = Console()


def _lines(path: Path | None, shipped: str) -> list[bytes]:
    """The non-blank lines of `path`, or of the shipped sample file when no path is given."""
    if path is None:
        return sample_lines(shipped)
    return [ln for ln in path.read_bytes().splitlines() if ln.strip()]


def demo(
    events: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="Valid events (JSONL) [default: the shipped sample_events.jsonl]."
        ),
    ] = None,
    malformed: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="Malformed messages, one per line [default: the shipped sample]."
        ),
    ] = None,
    rate: Annotated[float, typer.Option(help="Events per second to produce (0: as fast as possible).")] = 100.0,
    engine: Annotated[str, typer.Option(help="Embedded broker: tansu or noida.")] = "tansu",
    port: Annotated[int, typer.Option(help="Broker port on 127.0.0.1.")] = 9092,
    web_port: Annotated[int, typer.Option(help="Worker web port (metrics).")] = 6066,
    run_dir: Annotated[Path, typer.Option(help="Logs and state.")] = Path(".run/demo"),
    timeout: Annotated[float, typer.Option(help="Give up waiting for results after this many seconds.")] = 120.0,
    analytics: Annotated[bool, typer.Option(help="Window summaries, stats and spike alerts.")] = True,
    window: Annotated[float, typer.Option(help="Summary/alert window in seconds (short for a demo).")] = 2.0,
    spike: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Events sent in one burst: a planted spike [default: shipped]."),
    ] = None,
) -> None:
    """Start a broker and a worker, produce the sample events, show results live, then a summary."""
    settings = settings_or_exit()
    broker = EmbeddedBroker(engine, port=port, state_dir=run_dir)
    if broker.status().running:
        fail(f"a broker already runs on port {port}: stop it (slmstream broker stop --port {port})", prefix="demo")
    worker: WorkerProcess | None = None
    try:
        with console.status(f"starting the {engine} broker on 127.0.0.1:{port}"):
            status = broker.start()
        env = {"SLMSTREAM_BROKER": status.url, "SLMSTREAM_APP_ID": "slmstream-demo", "SLMSTREAM_LOG_FORMAT": "json"}
        if analytics:
            env |= demo_analytics_env(window)
            settings = settings_or_exit_with(env)
        worker = WorkerProcess(env, run_dir / "worker.log", run_dir / "worker-data", web_port)
        with console.status("starting the worker (loading the model)"):
            asyncio.run(
                ensure_topics(
                    status.bootstrap,
                    _topic_names(settings),
                    settings.topics.partitions,
                    **security_kwargs_or_exit(settings),
                )
            )
            worker.start()
            worker.wait_ready(90)
        console.print(f"broker {status.url}, worker {worker.url}/metrics (log: {worker.log_file})", soft_wrap=True)
        console.print(f"live dashboard while the demo runs: [bold]{worker.url}/dashboard[/]", soft_wrap=True)
        valid = _lines(events, SAMPLE_EVENTS)
        bad = _lines(malformed, MALFORMED_EVENTS)
        burst = _lines(spike, SPIKE_EVENTS) if analytics else []
        asyncio.run(_run(settings, status.bootstrap, valid, bad, rate, timeout, burst))
    except (BrokerError, WorkerError) as exc:
        fail(f"failed: {exc}", prefix="demo")
    except KeyboardInterrupt:
        console.print("interrupted: stopping")
    finally:
        with console.status("stopping the worker and the broker"):
            if worker is not None:
                worker.stop(30)
            broker.stop()
        console.print("stopped: no process left behind")


def _topic_names(settings: Settings) -> list[str]:
    t = settings.topics
    names = [t.events, t.enriched, t.dlq, t.deferred]
    if settings.summaries.enabled or settings.alerts.enabled:
        names += [t.summaries, t.stats, t.alerts]
    return names


def demo_analytics_env(window_s: float) -> dict[str, str]:
    """Summaries keyed by `source` (the sample events have 5), short windows, alerts after 2 windows. A
    SLMSTREAM_* variable the user set wins over these."""
    env = {
        "SLMSTREAM_SUMMARIES__ENABLED": "true",
        "SLMSTREAM_SUMMARIES__KEY": "source",
        "SLMSTREAM_SUMMARIES__WINDOW_S": f"{window_s:g}",
        "SLMSTREAM_SUMMARIES__GRACE_S": "1",
        "SLMSTREAM_ALERTS__ENABLED": "true",
        "SLMSTREAM_ALERTS__MIN_BASELINE_WINDOWS": "2",
    }
    return {k: v for k, v in env.items() if k not in os.environ}


def settings_or_exit_with(env: dict[str, str]) -> Settings:
    """The settings the worker will see with `env` on top of ours (the demo reads the same topics)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return settings_or_exit()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def _produce_with_spike(
    settings: Settings, bootstrap: str, stream: list[bytes], burst: list[bytes], rate: float, spike_sent: list[float]
) -> None:
    """The sample stream at `rate`, then the planted spike in one burst at the start of a fresh window."""
    t = settings.topics
    kwargs = security_kwargs_or_exit(settings)
    await _produce(stream, t.events, rate, bootstrap, t.partitions, kwargs)
    if burst:
        w = settings.summaries.window_s
        await asyncio.sleep((int(time.time() // w) + 1) * w + 0.1 - time.time())  # two windows never share it
        spike_sent.append(time.time())
        await _produce(burst, t.events, 0.0, bootstrap, t.partitions, kwargs)


async def _run(
    settings: Settings,
    bootstrap: str,
    valid: list[bytes],
    bad: list[bytes],
    rate: float,
    timeout: float,
    burst: list[bytes] | None = None,
) -> None:
    t = settings.topics
    analytics = settings.summaries.enabled or settings.alerts.enabled
    consumer = AIOKafkaConsumer(
        t.enriched,
        t.dlq,
        *([t.summaries, t.alerts] if analytics else []),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        **security_kwargs_or_exit(settings),
    )
    await consumer.start()
    enriched: list[dict[str, Any]] = []
    dlq: list[dict[str, Any]] = []
    recent: list[str] = []
    found: list[dict[str, Any]] = []  # summaries and alerts
    spike_sent: list[float] = []
    t0 = time.time()
    burst = burst or []
    producing = asyncio.ensure_future(
        _produce_with_spike(settings, bootstrap, _interleave(valid, bad), burst, rate, spike_sent)
    )
    valid = valid + burst
    # After the spike: its window closes (window + grace), then its summaries and the alert (budget); the
    # generator may still be finishing earlier windows' summaries until then.
    s = settings.summaries
    analytics_wait = s.window_s + s.grace_s + s.budget_s + 1.0
    try:
        with Live(console=console, refresh_per_second=8, transient=False) as live:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not _done(
                enriched, dlq, found, valid, bad, spike_sent, analytics_wait
            ):
                batch = await consumer.getmany(timeout_ms=100)
                for tp, records in batch.items():
                    for rec in records:
                        doc = orjson.loads(rec.value)
                        doc["_seen"] = time.time()
                        if tp.topic in (t.summaries, t.alerts) and analytics:
                            found.append(doc)
                            continue
                        (enriched if "analysis" in doc else dlq).append(doc)
                        recent.append(render(rec.value, False))
                recent = recent[-12:]
                live.update(_panel(enriched, dlq, len(valid), len(bad), recent, found))
        await producing
    finally:
        producing.cancel()
        await consumer.stop()
    _summary(enriched, dlq, len(valid), len(bad), t0, rate)
    if analytics:
        _analytics_summary(found)


def _done(
    enriched: list[dict[str, Any]],
    dlq: list[dict[str, Any]],
    found: list[dict[str, Any]],
    valid: list[bytes],
    bad: list[bytes],
    spike_sent: list[float],
    analytics_wait: float,
) -> bool:
    if len(enriched) < len(valid) or len(dlq) < len(bad):
        return False
    if not spike_sent:  # no analytics, or no spike planted
        return True
    # The alert of the spike's own window (an earlier one does not do), once every summary is due; at the
    # latest 10 s after that.
    spike_alert = any("explanation" in d and d["window"]["end_ms"] > spike_sent[0] * 1000 for d in found)
    waited = time.time() - spike_sent[0]
    return (spike_alert and waited > analytics_wait) or waited > analytics_wait + 10.0


def _analytics_summary(found: list[dict[str, Any]]) -> None:
    summaries = [d for d in found if "summary" in d]
    alerts = [d for d in found if "explanation" in d]
    console.rule("window summaries and alerts")
    for d in summaries[-6:]:
        console.print(render_analytics(d) or "", soft_wrap=True, highlight=False)
    for d in alerts:
        console.print(render_analytics(d) or "", soft_wrap=True, highlight=False)
    methods = Counter(d["method"] for d in summaries)
    met = sum(d["budget_met"] for d in summaries)
    console.print(
        f"summaries {len(summaries)} ({', '.join(f'{k} {v}' for k, v in methods.most_common()) or 'none'}; "
        f"budget met {met}/{len(summaries)}); alerts {len(alerts)}"
        + (f": {', '.join(sorted({a['label'] for a in alerts}))}" if alerts else "")
    )


def _interleave(valid: list[bytes], bad: list[bytes]) -> list[bytes]:
    """Spread the malformed messages through the stream, as they would arrive in real life."""
    out = list(valid)
    step = max(len(valid) // max(len(bad), 1), 1)
    for i, b in enumerate(bad):
        out.insert(min((i + 1) * step + i, len(out)), b)
    return out


def _panel(
    enriched: list[dict[str, Any]],
    dlq: list[dict[str, Any]],
    n_valid: int,
    n_bad: int,
    recent: list[str],
    found: list[dict[str, Any]] | None = None,
) -> Group:
    labels = Counter(d["analysis"]["label"] for d in enriched)
    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"enriched [bold]{len(enriched)}[/]/{n_valid}",
        f"dlq [bold]{len(dlq)}[/]/{n_bad}",
        "  ".join(f"{k} {v}" for k, v in labels.most_common()),
    )
    latest = [render_analytics_line(d) for d in (found or [])[-3:]]
    return Group(head, *recent, *latest)


def _summary(
    enriched: list[dict[str, Any]], dlq: list[dict[str, Any]], n_valid: int, n_bad: int, t0: float, rate: float
) -> None:
    console.rule("summary")
    by_label = Counter(d["analysis"]["label"] for d in enriched)
    hits = Counter(
        d["analysis"]["label"] for d in enriched if d["analysis"]["label"] == d.get("attrs", {}).get("expected_label")
    )
    expected = Counter(d.get("attrs", {}).get("expected_label") for d in enriched)
    table = Table("label", "events", "correct vs expected_label")
    for label, count in by_label.most_common():
        table.add_row(label, str(count), f"{hits[label]}/{expected[label]}" if expected[label] else "-")
    console.print(table)
    if enriched:
        total = np.array([d["analysis"]["latency_ms"]["total"] for d in enriched])
        seen = np.array([(d["_seen"] * 1000 - d["ts"]) for d in enriched])
        span = max(d["_seen"] for d in enriched) - t0
        with_expected = sum(expected.values()) - expected[None]
        console.print(
            f"enriched {len(enriched)}/{n_valid}, dlq {len(dlq)}/{n_bad}; "
            f"accuracy {sum(hits.values())}/{with_expected} = {sum(hits.values()) / max(with_expected, 1):.1%}\n"
            f"latency (event time → result): p50 {np.percentile(total, 50):.0f} ms, "
            f"p99 {np.percentile(total, 99):.0f} ms"
            f"; as read here: p50 {np.percentile(seen, 50):.0f} ms, p99 {np.percentile(seen, 99):.0f} ms\n"
            f"throughput {len(enriched) / span:.0f} events/s over {span:.1f} s "
            f"(produced at {'max rate' if rate <= 0 else f'{rate:.0f}/s'}); "
            f"deadline met {sum(d['analysis']['deadline_met'] for d in enriched)}/{len(enriched)}, "
            f"deferred {sum(d['analysis']['deferred'] for d in enriched)}"
        )
    if dlq:
        console.print(
            "dlq: " + ", ".join(f"{k} {v}" for k, v in Counter(d["error"]["type"] for d in dlq).most_common())
        )
