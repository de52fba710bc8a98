"""`slmstream models build|list`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.model.base import ModelError
from pipeline.model.catalog import CATALOG, model_dir

app = typer.Typer(help="Build (export + quantize, offline, cached) and list the models.", no_args_is_help=True)
console = Console()

CacheOpt = Annotated[Path, typer.Option("--cache-dir", envvar="SLMSTREAM_MODEL__CACHE_DIR", help="Model cache.")]


@app.command()
def build(
    names: Annotated[
        list[str] | None, typer.Argument(help=f"Models to build [default: all: {', '.join(CATALOG)}]")
    ] = None,
    cache_dir: CacheOpt = Path(".cache/models"),
    force: Annotated[bool, typer.Option(help="Rebuild even when the cache is current.")] = False,
) -> None:
    """Export and quantize the models from their wheels into the cache (re-runs are instant)."""
    from pipeline import logs
    from pipeline.model.build import build as build_models

    logs.configure("console")
    try:
        manifests = build_models(cache_dir, names or None, force=force)
    except ModelError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    for m in manifests:
        console.print(f"{m['name']}: {model_dir(cache_dir, m['name'])} ({m['size_bytes'] / 2**20:.1f} MiB)")


@app.command("list")
def list_models(cache_dir: CacheOpt = Path(".cache/models")) -> None:
    """Show the known models and whether each is built."""
    from pipeline.model.build import is_current

    table = Table("model", "built", "size MiB", "source wheel", "what")
    for name, spec in CATALOG.items():
        manifest = model_dir(cache_dir, name) / "manifest.json"
        built = is_current(cache_dir, name)
        size = f"{(model_dir(cache_dir, name) / 'model.onnx').stat().st_size / 2**20:.1f}" if built else "-"
        table.add_row(
            name, "yes" if built else ("stale" if manifest.exists() else "no"), size, spec.package, spec.description
        )
    console.print(table)
