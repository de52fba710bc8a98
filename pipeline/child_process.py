"""A child process in its own process group, logging to a file: start, check, stop, last lines of its log.

The one place the stop sequence lives (the worker, the model server, the bench's peers use it): SIGTERM,
wait up to `timeout` for a graceful exit (a Faust worker drains and commits), then SIGKILL to the whole
group (the child was started with `start_new_session`, so its group id is its pid and nothing it spawned
is left behind).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


class ChildError(RuntimeError):
    """A child exited when it should run, or did not become ready."""


class ChildProcess:
    def __init__(self, name: str, log_file: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.log_file = log_file
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def spawn(self, cmd: Sequence[str]) -> None:
        """Start `cmd` with stdout and stderr appended to the log file."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                list(cmd), env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def check_alive(self) -> None:
        """Raise when the child has exited (with its exit status and the end of its log)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise self.error(f"{self.name} exited with {self.proc.returncode}")

    def error(self, what: str) -> ChildError:
        return ChildError(f"{what}:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """Graceful stop (SIGTERM), SIGKILL to the group after `timeout`; the exit status (None: never started).
        Stopping what has already exited is a no-op."""
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
