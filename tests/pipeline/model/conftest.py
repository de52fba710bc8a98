"""Shared fixtures of the model tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def sock_path() -> Iterator[Path]:
    """A Unix socket path in a short private directory (mode 0700) under /tmp: a socket path may be at most 107
    bytes, which a deep pytest tmp_path can pass whatever the test does."""
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="slm-"))  # mkdtemp makes it 0700
    try:
        yield folder / "m.sock"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
