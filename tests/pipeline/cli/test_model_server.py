"""`slmstream model-server`: refuses clearly when it cannot serve, serves and cleans up when it can.

Sockets go in `socket_dir` (tests/conftest.py), never under tmp_path: a socket path holds at most 107 bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.model.server import server_answers

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(
        app, ["model-server", *args], env={"SLMSTREAM_CONFIG": str(ROOT / "config" / "slmstream.yaml"), **env}
    )


def test_without_a_socket_it_says_how_to_give_one() -> None:
    result = run(SLMSTREAM_MODEL__SERVER_SOCKET="")
    assert result.exit_code == 2
    assert "--socket" in result.output and "SLMSTREAM_MODEL__SERVER_SOCKET" in result.output


def test_an_unsafe_directory_is_refused(socket_dir: Path) -> None:
    shared = socket_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = run("--socket", str(shared / "m.sock"), "--model", "identity")
    assert result.exit_code == 1 and "writable by group or others" in result.output
    assert not (shared / "m.sock").exists()


def test_an_unknown_model_is_refused_before_listening(socket_dir: Path) -> None:
    result = run("--socket", str(socket_dir / "m.sock"), "--model", "no-such-model")
    assert result.exit_code == 2 and "cannot start" in result.output
    assert not (socket_dir / "m.sock").exists()


def test_serves_until_sigterm_then_removes_its_socket(socket_dir: Path) -> None:
    sock = socket_dir / "m.sock"
    exe = Path(sys.executable).with_name("slmstream")
    env = {**os.environ, "SLMSTREAM_CONFIG": str(ROOT / "config" / "slmstream.yaml")}
    proc = subprocess.Popen([str(exe), "model-server", "--socket", str(sock), "--model", "identity"], env=env)
    try:
        deadline = time.monotonic() + 30
        while not server_answers(sock) and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.1)
        assert server_answers(sock)
        assert oct(sock.stat().st_mode & 0o777) == oct(0o600)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
