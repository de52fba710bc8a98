"""tests/processes.py: a command past its time is interrupted (its cleanup runs), not killed."""

from __future__ import annotations

import sys

import pytest

from tests.processes import run_to_end

SLEEPER = """import time
try:
    time.sleep(30)
except KeyboardInterrupt:
    print("stopped its children")
    raise SystemExit(1)
"""


def test_a_command_past_its_time_is_interrupted_and_its_cleanup_runs() -> None:
    with pytest.raises(pytest.fail.Exception, match="stopped its children"):
        run_to_end([sys.executable, "-c", SLEEPER], 1)


def test_a_command_in_time_gives_its_output() -> None:
    done = run_to_end([sys.executable, "-c", "print('hi')"], 30)
    assert (done.returncode, done.stdout) == (0, "hi\n")
