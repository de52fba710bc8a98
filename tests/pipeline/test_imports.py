"""Importing a module only defines things: every module under pipeline/, agents/ and schemas/ imports in a fresh
interpreter whose environment holds an invalid setting, and prints nothing, exits nothing, starts no thread
and creates no Faust app or other `mode.Service` (a worker is assembled only by pipeline/worker.py, on demand)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "agents", "schemas")

CHILD = r"""
import gc, importlib, sys, threading
for name in sys.argv[1:]:
    importlib.import_module(name)
import mode
problems = []
threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
if threads:
    problems.append(f"threads started: {threads}")
services = sorted({type(o).__qualname__ for o in gc.get_objects() if isinstance(o, mode.Service)})
if services:
    problems.append(f"services created (a Faust app is one): {services}")
if problems:
    sys.exit("; ".join(problems))
"""


def module_names() -> list[str]:
    """Every module of the packages, from the files (listing them imports nothing)."""
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_module_list_is_complete() -> None:
    names = module_names()
    assert {"pipeline", "pipeline.worker", "pipeline.runtime", "agents.classify", "schemas.types"} <= set(names)


def test_importing_any_module_reads_no_settings_and_starts_nothing(tmp_path: Path) -> None:
    names = module_names()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),  # this tree's code, not whichever checkout the venv was installed from
        "HOME": str(tmp_path),
        "SLMSTREAM_BATCHING__BUDGET_MS": "-5",  # invalid: reading the settings would fail loudly
    }
    result = subprocess.run(
        [sys.executable, "-c", CHILD, *names],
        env=env,
        cwd=tmp_path,  # the repo's config/slmstream.yaml is not found from here either
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), (
        f"importing {len(names)} modules: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
