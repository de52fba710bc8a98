"""Start, probe and stop a `faust -A pipeline worker` process: used by the demo, the benchmark and tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


class WorkerError(RuntimeError):
    pass


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_file: Path, data_dir: Path, web_port: int) -> None:
        self.env = {**os.environ, **env, "SLMSTREAM_WEB__PORT": str(web_port), "PYTHONUNBUFFERED": "1"}
        self.log_file = log_file
        self.data_dir = data_dir
        self.web_port = web_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        faust = Path(sys.executable).with_name("faust")
        cmd = [str(faust), "-A", "pipeline", "--datadir", str(self.data_dir), "worker", "-l", "info"]
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _get(self, path: str, timeout: float):
        """GET a page of the worker, with its access token when one is configured by env var."""
        req = urllib.request.Request(f"{self.url}{path}")
        token = self.env.get("SLMSTREAM_WEB__TOKEN")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        return urllib.request.urlopen(req, timeout=timeout)

    def ready(self) -> bool:
        try:
            with self._get("/health", 1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise WorkerError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise WorkerError(f"worker not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def metrics(self) -> str:
        with self._get("/metrics", 2) as resp:
            return resp.read().decode()

    def stop(self, timeout: float = 30.0) -> int | None:
        """Graceful stop (SIGTERM: Faust drains and commits), SIGKILL after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
