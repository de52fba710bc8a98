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


def _pipeline_row(name: str, workers: list[float], workers_us: float, server_us: float | None) -> dict:
    row = {
        "name": name,
        "events_per_s": 1000.0,
        "ratio_vs_in_process_x1": 1.0,
        "pipeline_cores": 0.5,
        "machine_cores": 2.0,
        "events_per_pipeline_core_s": 2000.0,
        "worker_cores": workers,
        "workers_cpu_us_per_event": workers_us,
        "server_cpu_us_per_event": server_us,
        "worker_rss_mib": [90.0] * len(workers),
        "shared": server_us is not None,
    }
    if server_us is not None:
        row["server_rss_mib"] = 70.0
        row["server_batches"] = {"mean_batch": 32.0, "mean_requests_per_call": 1.0}
    return row


def test_model_server_table_gives_each_workers_cores_and_the_cpu_per_event_of_workers_and_server() -> None:
    from bench.report import print_model_server

    stats = {"p50": 100.0, "p99": 200.0}
    results = {
        "transport": {
            "batch": 32,
            "dim": 384,
            "calls": 100,
            "in_process_us": stats,
            "socket_us": stats,
            "socket_encode_only_us": stats,
            "overhead_p50_us": 0.0,
            "ratio_p50": 1.0,
        },
        "real_model_batch": {"p50_ms": 1.0},
        "pipelines": [
            _pipeline_row("in-process x1", [0.41], 51.8, None),
            _pipeline_row("server x2", [0.26, 0.22], 85.0, 13.8),
        ],
        "loadavg_at_start": (1.0, 1.0, 1.0),
        "loadavg_at_end": (1.0, 1.0, 1.0),
        "cpus": 2,
    }
    out = io.StringIO()
    print_model_server(Console(file=out, width=250, color_system=None), results)
    lines = out.getvalue().splitlines()
    (alone,) = [line for line in lines if "│ in-process x1" in line]
    assert "0.41" in alone and "51.8" in alone and "+" not in alone
    (shared,) = [line for line in lines if "│ server x2" in line]
    assert "0.26 0.22" in shared and "85.0 + 13.8" in shared
