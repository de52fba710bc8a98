"""Start, probe and stop a `faust -A pipeline worker` process: used by the demo, the benchmark and tests."""

from __future__ import annotations

import sys
import time
import urllib.request
from http.client import HTTPResponse
from pathlib import Path

from pipeline.child_process import ChildError, ChildProcess

WorkerError = ChildError  # the name the demo, the bench and the tests catch


class WorkerProcess(ChildProcess):
    def __init__(self, env: dict[str, str], log_file: Path, data_dir: Path, web_port: int) -> None:
        super().__init__("worker", log_file, {**env, "SLMSTREAM_WEB__PORT": str(web_port)})
        self.data_dir = data_dir
        self.web_port = web_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        faust = Path(sys.executable).with_name("faust")
        self.spawn([str(faust), "-A", "pipeline", "--datadir", str(self.data_dir), "worker", "-l", "info"])

    def _get(self, path: str, timeout: float) -> HTTPResponse:
        """GET a page of the worker, with its access token when one is configured by env var."""
        req = urllib.request.Request(f"{self.url}{path}")
        token = self.env.get("SLMSTREAM_WEB__TOKEN")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        resp: HTTPResponse = urllib.request.urlopen(req, timeout=timeout)  # http(s) URLs give an HTTPResponse
        return resp

    def ready(self) -> bool:
        try:
            with self._get("/health", 1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.ready():
                return
            time.sleep(0.2)
        raise self.error(f"worker not ready after {timeout:.0f}s")

    def metrics(self) -> str:
        with self._get("/metrics", 2) as resp:
            return resp.read().decode()
