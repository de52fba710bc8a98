"""What `bench identity` prints: one row per system, with ours / it (rendered at a fixed width)."""

from __future__ import annotations

import io

from rich.console import Console

from bench.report import identity_table


def _drained(eps: float, cpu_us: float) -> dict:
    cpu = {"system_cores": 0.9, "broker_cores": 0.2, "other_processes_cores": 0.05}
    return {"events_per_s": eps, "steady_events_per_s": eps, "system_cpu_us_per_event": cpu_us, "cpu": cpu}


def test_identity_table_rows_labels_and_ratios() -> None:
    systems = {"aiokafka": _drained(40_000, 20.0), "identity": _drained(10_000, 30.0)}
    ratios = {"aiokafka": {"events_per_s": 0.25, "steady_events_per_s": 0.25, "system_cpu_us_per_event": 1.5}}
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(
        identity_table(systems, ratios, {"aiokafka": "aiokafka alone", "identity": "ours"})
    )
    lines = out.getvalue().splitlines()
    (peer,) = [line for line in lines if "aiokafka alone" in line]
    assert "40,000" in peer and "20.0" in peer and "0.25" in peer and "1.50" in peer
    (ours,) = [line for line in lines if "│ ours" in line]
    assert "10,000" in ours and "30.0" in ours and ours.count("│ -") == 2  # no ratio to itself
