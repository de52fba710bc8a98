"""Unix socket paths for tests: in a short private directory under /tmp, not under pytest's tmp_path.

A socket path may be at most 107 bytes; a deep tmp_path (a long user name, a nested basetemp) can pass that
whatever the test does, so a test that binds under it would fail for reasons unrelated to the code.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def short_private_dir() -> Iterator[Path]:
    """`/tmp/slm-XXXXXXXX` (not $TMPDIR: it may be long), made 0700 by mkdtemp and removed afterwards."""
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="slm-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def short_socket_path(name: str = "m.sock") -> Iterator[Path]:
    """`/tmp/slm-XXXXXXXX/<name>` in a `short_private_dir()`."""
    with short_private_dir() as folder:
        yield folder / name
