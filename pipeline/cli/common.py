"""What the CLI commands share: settings loading with a readable error."""

from __future__ import annotations

import typer
from rich.console import Console

from pipeline.config import ConfigError, Settings, load_settings

err = Console(stderr=True)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        err.print(f"[red]slmstream:[/] {exc}")
        raise typer.Exit(2) from None
