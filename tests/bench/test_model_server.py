"""The pure helpers of `slmstream bench model-server` (the benchmark itself is run by hand)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from bench.model_server import rss_mib, server_batches


def test_server_batches_counts_only_model_calls_after_the_offset(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    before = orjson.dumps({"event": "model_server_batch", "size": 99, "requests": 9, "clients": 9}) + b"\n"
    log.write_bytes(before)
    offset = log.stat().st_size
    lines = [
        {"event": "model_server_batch", "size": 32, "requests": 1, "clients": 1},
        {"event": "model_server_listening"},
        {"event": "model_server_batch", "size": 64, "requests": 3, "clients": 2},
    ]
    with log.open("ab") as f:
        for d in lines:
            f.write(orjson.dumps(d) + b"\n")
        f.write(b"not json: a traceback line\n")
    got = server_batches(log, offset)
    assert {k: got[k] for k in ("calls", "mean_batch", "max_batch", "mean_requests_per_call")} == {
        "calls": 2,
        "mean_batch": 48.0,
        "max_batch": 64,
        "mean_requests_per_call": 2.0,
    }
    assert got["mean_clients_per_call"] == 1.5
    assert got["merged_share"] == 0.5
    assert got["texts_per_model_s"] == 0.0  # these lines carry no model_ms
    assert server_batches(log, log.stat().st_size)["calls"] == 0


def test_rss_of_this_process_and_of_none() -> None:
    assert rss_mib(os.getpid()) > 1.0
    assert rss_mib(None) == 0.0
