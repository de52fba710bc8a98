"""structlog set-up: JSON lines in production, readable lines in a terminal.

Event text never goes into info-level logs: log ids and counts, not content.
"""

from __future__ import annotations

import logging
import sys

import structlog


class _Stderr:
    """The stderr of the time logging was set up, until it is closed; then whatever `sys.stderr` is. Bound once
    (as before), so a worker's lines keep going to the real stderr after Faust redirects `sys.stderr` into its
    own logging; re-resolved only when that stream was replaced and closed (a test's capture), where a cached
    logger would otherwise raise "I/O operation on closed file" on every line."""

    def __init__(self) -> None:
        self.stream = sys.stderr

    def write(self, text: str) -> int:
        if self.stream.closed:
            self.stream = sys.stderr
        return self.stream.write(text)

    def flush(self) -> None:
        if not self.stream.closed:
            self.stream.flush()


def configure(fmt: str = "auto", level: str = "info") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(_Stderr()),  # type: ignore[arg-type]  # PrintLogger only writes and flushes
        cache_logger_on_first_use=True,
    )
