"""Shared fixtures of the model tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sockets import short_socket_path


@pytest.fixture
def sock_path() -> Iterator[Path]:
    """The model server's socket, in a short private directory (tests/sockets.py)."""
    with short_socket_path() as path:
        yield path
