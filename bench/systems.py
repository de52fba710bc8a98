"""The systems the comparison runs, each as its own process reading one input topic and writing one output
topic keyed by the event id, with the same settings (model, threads, fetch wait) from SLMSTREAM_* env vars:

  ours      `faust -A pipeline worker`: validate → deadline batches → model → events.enriched
  identity  the same worker with `model.encoder=identity`: the whole path minus inference
  naive     bench/naive_app.py: a Faust agent, one model call per event (in a thread)
  quix      bench/quix_app.py: Quix Streams, one model call per message
  aiokafka  bench/aiokafka_app.py: aiokafka alone, no model (the ceiling of `bench identity`)

With `model.encoder: identity` (`bench identity`), naive and quix make no model call either: parse, add the
field, produce.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.child_process import ChildProcess
from pipeline.model.identity import IDENTITY
from pipeline.worker_process import WorkerProcess

SYSTEMS = ("ours", "identity", "naive", "quix", "aiokafka")


@dataclass
class SystemProcess:
    """One system under test: started with its topics, stopped with SIGTERM (SIGKILL after a timeout)."""

    name: str
    bootstrap_url: str  # kafka://host:port
    run_dir: Path
    web_port: int
    late_policy: str = "process"
    extra_env: dict[str, str] = field(default_factory=dict)
    child: ChildProcess | None = None

    @property
    def input_topic(self) -> str:
        return f"bench-{self.name}-in"

    @property
    def output_topic(self) -> str:
        return f"bench-{self.name}-out"

    @property
    def topics(self) -> list[str]:
        # ours also needs its DLQ and deferred topics (declared, normally empty in the bench)
        extra = [f"bench-{self.name}-dlq", f"bench-{self.name}-deferred"] if self.is_worker else []
        return [self.input_topic, self.output_topic, *extra]

    @property
    def is_worker(self) -> bool:
        return self.name in ("ours", "identity")

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def env(self) -> dict[str, str]:
        env = {
            "SLMSTREAM_BROKER": self.bootstrap_url,
            "SLMSTREAM_APP_ID": f"bench-{self.name}-{os.getpid()}",
            "SLMSTREAM_LOG_LEVEL": "warning",  # no per-batch lines
            "SLMSTREAM_LOG_FORMAT": "json",
            "SLMSTREAM_TOPICS__EVENTS": self.input_topic,
            "SLMSTREAM_TOPICS__ENRICHED": self.output_topic,
            "SLMSTREAM_TOPICS__DLQ": f"bench-{self.name}-dlq",
            "SLMSTREAM_TOPICS__DEFERRED": f"bench-{self.name}-deferred",
            "SLMSTREAM_BATCHING__LATE_POLICY": self.late_policy,
            "SLMSTREAM_WEB__PORT": str(self.web_port),
        }
        if self.name == "identity":
            env["SLMSTREAM_MODEL__ENCODER"] = IDENTITY
        return {**env, **self.extra_env}

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.is_worker:
            worker = WorkerProcess(self.env(), self.log_file, self.run_dir / f"{self.name}-data", self.web_port)
            self.child = worker
            worker.start()
            return
        if self.name == "naive":
            faust = Path(sys.executable).with_name("faust")
            data = self.run_dir / "naive-data"
            cmd = [str(faust), "-A", "bench.naive_app", "--datadir", str(data), "worker", "-l", "warn"]
            cmd += ["--web-port", str(self.web_port), "--web-host", "127.0.0.1"]
        elif self.name == "quix":
            cmd = [sys.executable, "-m", "bench.quix_app"]
        elif self.name == "aiokafka":
            cmd = [sys.executable, "-m", "bench.aiokafka_app"]
        else:
            raise ValueError(f"unknown system {self.name!r}: choose from {', '.join(SYSTEMS)}")
        self.child = ChildProcess(self.name, self.log_file, self.env())
        self.child.spawn(cmd)

    def wait_ready(self, timeout: float) -> None:
        """Ours has /health; the others are ready when their warm-up results come back."""
        if isinstance(self.child, WorkerProcess):
            self.child.wait_ready(timeout)

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None else None

    def check_alive(self) -> None:
        if self.child is not None:
            self.child.check_alive()

    def stop(self, timeout: float = 30.0) -> None:
        if self.child is not None:
            self.child.stop(timeout)

    def log_tail(self, lines: int = 30) -> str:
        return self.child.log_tail(lines) if self.child is not None else "(not started)"
