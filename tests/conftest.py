"""Fixtures and checks every test may use.

- `clean_env`: settings come from the repository's config file and nothing else, whoever runs the tests and
  from wherever (tests/pipeline uses it for every test, see tests/pipeline/conftest.py).
- `socket_dir`: a short private directory for Unix sockets, whose paths are limited to 107 bytes: under a
  long `tmp_path` (a clone in a deep folder, `--basetemp`) a socket could not be created at all.
- `cli_options`: the options a CLI command has, independent of how --help lays them out.
- A test skipped because a model is not built fails instead (see `pytest_runtest_makereport`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.sockets import short_private_dir

ROOT = Path(__file__).resolve().parents[1]
REPO_CONFIG = ROOT / "config" / "slmstream.yaml"
# Environment variables that change what the code under test does: settings, and the test-only fault hooks.
LEAKY_PREFIXES = ("SLMSTREAM_", "SLMTEST_")
# Set to 1 to let the model tests skip when the models are not built (they fail otherwise: `make models`).
# Read once here: clean_env removes SLMTEST_* variables before the tests run.
ALLOW_UNBUILT_ENV = "SLMTEST_ALLOW_UNBUILT_MODELS"
ALLOW_UNBUILT = os.environ.get(ALLOW_UNBUILT_ENV) == "1"
NOT_BUILT = " is not built"  # what every "model missing" skip in tests/pipeline/model says


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    """No SLMSTREAM_*/SLMTEST_* variable of the developer's shell; SLMSTREAM_CONFIG names the repository's
    config by absolute path; the working directory is the repository root (relative defaults such as
    model.cache_dir = .cache/models resolve there). Returns the config path. A test sets what it needs after."""
    for name in list(os.environ):
        if name.startswith(LEAKY_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(REPO_CONFIG))
    monkeypatch.chdir(ROOT)
    return REPO_CONFIG


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A fresh private (0700) directory with a short path, for Unix sockets; removed afterwards."""
    with short_private_dir() as path:
        yield path


@pytest.fixture
def cli_options() -> Callable[..., set[str]]:
    """cli_options("dlq", "replay"): the option names of that `slmstream` command, read from the command itself:
    --help lays them out to the terminal's width, and a narrow one cuts a long name in two."""
    import typer

    from pipeline.cli import app

    def options(*names: str) -> set[str]:
        command = typer.main.get_command(app)
        for name in names:
            command = command.commands[name]  # type: ignore[attr-defined]  # a group: KeyError when no such command
        return {opt for param in command.params for opt in param.opts}

    return options


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A model test skipped because its model is not built is a failure: a run without the models must not
    look green. `make test-unit` builds them first; SLMTEST_ALLOW_UNBUILT_MODELS=1 allows the skip."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or ALLOW_UNBUILT or not isinstance(report.longrepr, tuple):
        return
    reason = str(report.longrepr[2])
    if NOT_BUILT in reason:
        report.outcome = "failed"
        report.longrepr = f"{reason}\n(run `make models`, or set {ALLOW_UNBUILT_ENV}=1 to skip these tests)"
