"""Logging set-up: a logger keeps working after the stream it first wrote to is replaced and closed."""

from __future__ import annotations

import io
import sys

import pytest
import structlog

from pipeline import logs


@pytest.fixture(autouse=True)
def _restore_structlog():
    yield
    structlog.reset_defaults()


def test_a_cached_logger_writes_to_the_current_stderr_after_the_old_one_is_closed(monkeypatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure("json")
    log = structlog.get_logger("t")
    log.info("one")
    first.close()  # what a test's capture or a daemon's redirect does to the stream logging started with
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    log.info("two")
    assert '"event": "two"' in second.getvalue()


def test_lines_keep_going_to_the_stream_of_the_set_up_when_stderr_is_redirected_later(monkeypatch) -> None:
    """Faust replaces sys.stderr with a proxy into its own logging once the worker starts: our JSON lines must
    not go through it (they would come out wrapped in Faust's own log format)."""
    real = io.StringIO()
    monkeypatch.setattr(sys, "stderr", real)
    logs.configure("json")
    log = structlog.get_logger("t")
    redirect = io.StringIO()
    monkeypatch.setattr(sys, "stderr", redirect)
    log.info("three")
    assert '"event": "three"' in real.getvalue() and redirect.getvalue() == ""
