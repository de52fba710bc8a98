"""Running a command that starts brokers and workers of its own (the bench commands) from a test."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

STOP_GRACE_S = 60.0  # an interrupted bench stops its worker and broker (bench/cli.py `guarded`)


def run_to_end(cmd: Sequence[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(cmd, capture_output=True, text=True)`, but a run past `timeout` is interrupted (SIGINT),
    not killed: its children run in sessions of their own, so killing the command alone would leave its broker
    and worker running for the rest of the suite. Fails the test with the output's tail when it timed out."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:4])} ... ran past {timeout:.0f} s:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)
