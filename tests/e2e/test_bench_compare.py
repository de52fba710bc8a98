"""Smoke tests of `slmstream bench compare` (its own tansu broker, one system, one short step: ~20 s each) and of
`slmstream bench identity` (every system, 3,000 events each: enough for CPU time in 10 ms ticks).

The harness — broker, system process, warm-up, open-loop step, reader, summary, plot, JSON — with the
identity system (our worker without inference: starts fastest) and with each peer app (naive Faust agent,
Quix Streams), so a broken peer shows here and not in the middle of a long benchmark run.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import orjson
import pytest

from tests.processes import run_to_end

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("system", ["identity", "naive", "quix"])
def test_compare_one_system_one_step(system: str, tmp_path: Path) -> None:
    if system == "quix":
        pytest.importorskip("quixstreams", reason="the peer comes with the bench extra: pip install -e '.[bench]'")
    slmstream = Path(sys.executable).with_name("slmstream")
    out = tmp_path / "out"
    cmd = [str(slmstream), "bench", "compare", "--systems", system, "--rates", "40", "--seconds", "2"]
    cmd += ["--warmup", "0.5", "--bare-texts", "0", "--out-dir", str(out), "--run-root", str(tmp_path / "run")]
    proc = run_to_end(cmd, 120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    (result_file,) = out.glob("compare-*.json")
    r = orjson.loads(result_file.read_bytes())
    assert r["machine"]["cpu_count"] >= 1 and r["machine"]["broker_engine"] == "tansu"
    (step,) = r["systems"][system]["steps"]
    assert step["offered_rate"] == 40 and step["sent"] == 80
    assert step["received"] == 80 and step["missing"] == 0  # every measured event answered
    assert 0 < step["p50_ms"] <= step["p99_ms"] < 10_000 and math.isfinite(step["p99_ms"])
    assert 10 < step["achieved_rate"] < 60  # 40/s offered; a loaded machine stretches the tail
    assert step["cpu"]["system_cores"] > 0
    assert (out / Path(r["plot"]).name).read_bytes()[:4] == b"\x89PNG"
    assert not Path(f"/proc/{r['machine']['broker_pid']}").exists()  # the bench stopped its broker


def test_identity_drains_the_same_events_through_every_system(tmp_path: Path) -> None:
    """`bench identity`: aiokafka alone, Quix, the per-event Faust agent and ours, one after the other (~25 s)."""
    pytest.importorskip("quixstreams", reason="the peer comes with the bench extra: pip install -e '.[bench]'")
    slmstream = Path(sys.executable).with_name("slmstream")
    out = tmp_path / "out"
    cmd = [str(slmstream), "bench", "identity", "-n", "3000", "--out-dir", str(out)]
    cmd += ["--run-root", str(tmp_path / "run")]
    proc = run_to_end(cmd, 120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    (result_file,) = out.glob("identity-*.json")
    r = orjson.loads(result_file.read_bytes())
    assert list(r["systems"]) == ["aiokafka", "quix", "naive", "identity"]  # in the order they ran
    for name, s in r["systems"].items():
        assert s["complete"] and s["results"] == 3000 and s["duplicates"] == 0, name
        assert s["events_per_s"] > 0 and s["system_cpu_us_per_event"] > 0, name
    assert set(r["ratios"]) == {"aiokafka", "quix", "naive"}
    assert all(math.isfinite(v) and v > 0 for q in r["ratios"].values() for v in q.values())
    assert "ours/aiokafka alone" in proc.stdout and "ours/Quix Streams" in proc.stdout
    assert (out / Path(r["plot"]).name).read_bytes()[:4] == b"\x89PNG"
    assert not Path(f"/proc/{r['machine']['broker_pid']}").exists()  # the bench stopped its broker
