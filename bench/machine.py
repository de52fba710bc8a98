"""The machine a bench runs on: a free local port, an embedded broker on one, installed versions, and the facts
each result file records."""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.broker import BrokerStatus, EmbeddedBroker
from pipeline.worker_process import WorkerProcess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BenchBroker:
    """One embedded broker for a bench run, on a free port, its state in `run_dir/broker`; `stop()` is
    idempotent (stopping what never started or already stopped does nothing)."""

    def __init__(self, engine: str, run_dir: Path) -> None:
        self.broker = EmbeddedBroker(engine, port=free_port(), state_dir=run_dir / "broker")  # type: ignore[arg-type]
        self.status: BrokerStatus | None = None

    def start(self) -> BrokerStatus:
        self.status = self.broker.start()
        return self.status

    def stop(self) -> None:
        if self.status is not None:
            self.broker.stop()
            self.status = None


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_facts() -> dict[str, Any]:
    """CPUs, load, platform and the versions of what the figures depend on."""
    import onnxruntime as ort

    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model(),
        "loadavg_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "aiokafka": package_version("aiokafka"),
        "faust": package_version("faust-streaming"),
    }


def stop_worker_and_broker(worker: WorkerProcess | None, broker: BenchBroker | None) -> None:
    """A bench run's worker (graceful, 30 s) and then its broker, the broker also when the worker's stop fails."""
    try:
        if worker is not None:
            worker.stop(30)
    finally:
        if broker is not None:
            broker.stop()
