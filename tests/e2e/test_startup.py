"""A worker that cannot load its model stops at start with a message that says what to do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import MODELS, ROOT, free_port

pytestmark = pytest.mark.e2e


def run_worker(env: dict[str, str], tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    faust = Path(sys.executable).with_name("faust")
    return subprocess.run(
        [str(faust), "-A", "pipeline", "--datadir", str(tmp_path / "data"), "worker", "-l", "info"],
        env={"PATH": "/usr/bin:/bin", "SLMSTREAM_CONFIG": str(ROOT / "config" / "slmstream.yaml"), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def test_missing_model_stops_the_worker_before_kafka(tmp_path: Path) -> None:
    # No broker on this port: the check must come before any connection attempt.
    result = run_worker(
        {"SLMSTREAM_MODEL__CACHE_DIR": str(tmp_path / "empty"), "SLMSTREAM_BROKER": "kafka://127.0.0.1:1"},
        tmp_path,
        timeout=30,
    )
    assert result.returncode == 2
    assert "minilm-l6-int8" in result.stderr and "slmstream models build" in result.stderr


def test_corrupt_model_stops_the_worker(tmp_path: Path, broker, topics) -> None:
    cache = tmp_path / "models"
    shutil.copytree(MODELS / "minilm-l6-int8", cache / "minilm-l6-int8")
    model = cache / "minilm-l6-int8" / "model.onnx"
    model.write_bytes(model.read_bytes()[:4096])  # truncated: the manifest's hash no longer matches
    result = run_worker(
        {
            "SLMSTREAM_MODEL__CACHE_DIR": str(cache),
            "SLMSTREAM_BROKER": broker.url,
            "SLMSTREAM_WEB__PORT": str(free_port()),
            **topics.env(),
        },
        tmp_path,
    )
    assert result.returncode != 0
    assert "does not match its manifest" in result.stderr and "slmstream models build --force" in result.stderr
