"""What `slmstream bench compare` prints: the step table per system and the ratios."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.table import Table


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
