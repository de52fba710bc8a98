"""What the CLI commands share: settings loading with a readable error, and one way to print errors.

Errors go to stderr unwrapped: Rich would otherwise wrap them at the terminal's width (80 columns when it
cannot tell), splitting a path or a phrase across lines, so what a script or a test reads would depend on
the terminal and on how long the paths are.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.config import ConfigError, Settings, load_settings

# soft_wrap: never break a line at the console width; highlight off: the message is shown as written.
err = Console(stderr=True, soft_wrap=True, highlight=False)


def print_error(message: str, *, prefix: str = "slmstream") -> None:
    """`prefix: message` on stderr, in one piece; `message` is plain text (square brackets stay as they are)."""
    err.print(f"[red]{escape(prefix)}:[/] {escape(message)}")


def fail(message: str, code: int = 1, *, prefix: str = "slmstream") -> NoReturn:
    """Print the error (see print_error) and leave the command with exit status `code`."""
    print_error(message, prefix=prefix)
    raise typer.Exit(code) from None  # the message says it all: no chained traceback


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc), 2)
