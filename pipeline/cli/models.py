"""`slmstream models build|import-decoder|list`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import fail
from pipeline.model.base import ModelError
from pipeline.model.catalog import CATALOG, default_models, model_dir

app = typer.Typer(help="Build (export + quantize, offline, cached) and list the models.", no_args_is_help=True)
console = Console(soft_wrap=True)  # lines whole whatever the terminal's width (tables lay out as usual)

CacheOpt = Annotated[Path, typer.Option("--cache-dir", envvar="SLMSTREAM_MODEL__CACHE_DIR", help="Model cache.")]


@app.command()
def build(
    names: Annotated[
        list[str] | None, typer.Argument(help=f"Models to build [default: {', '.join(default_models())}]")
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
        fail(str(exc), prefix="error")
    for m in manifests:
        console.print(f"{m['name']}: {model_dir(cache_dir, m['name'])} ({m['size_bytes'] / 2**20:.1f} MiB)")


@app.command("import-decoder")
def import_decoder_cmd(
    source: Annotated[
        Path,
        typer.Argument(
            help="A Hugging Face checkpoint dir (config.json, *.safetensors, tokenizer.json) or an ONNX export dir"
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="The generator's name (config: summaries.generator).")],
    quantize: Annotated[
        str, typer.Option(help="int8 (8-bit weight blocks) or none (fp32); checkpoints only.")
    ] = "int8",
    chat_template: Annotated[
        str | None,
        typer.Option(help="chatml | phi3 | gemma | llama3 | a JSON file of template facts [default: from the model]"),
    ] = None,
    cache_dir: CacheOpt = Path(".cache/models"),
) -> None:
    """Bring your own small generator (Llama-style, Phi-3, Gemma 1/2/3): export a checkpoint into the cache,
    or write a manifest.json next to a ready ONNX decoder export."""
    from pipeline import logs
    from pipeline.model.import_decoder import import_decoder

    logs.configure("console")
    try:
        path, manifest = import_decoder(source, cache_dir, name, quantize=quantize, chat_template=chat_template)
    except ModelError as exc:
        fail(str(exc), prefix="error")
    where = name if path.parent.resolve() == cache_dir.resolve() else str(path)
    console.print(
        f"{manifest['name']}: {path} ({manifest.get('family', 'onnx export')}, {manifest['n_layers']} layers, "
        f"context {manifest.get('context_length')}, stop ids {manifest['stop_token_ids']})"
    )
    console.print(f"use it: summaries.generator: {where}   (or SLMSTREAM_SUMMARIES__GENERATOR={where})")


@app.command("list")
def list_models(cache_dir: CacheOpt = Path(".cache/models")) -> None:
    """Show the known models and whether each is built, then the generators imported into the cache."""
    import orjson

    from pipeline.model.build import is_current

    table = Table("model", "built", "size MiB", "source wheel", "what")
    for name, spec in CATALOG.items():
        manifest = model_dir(cache_dir, name) / "manifest.json"
        built = is_current(cache_dir, name)
        size = f"{(model_dir(cache_dir, name) / 'model.onnx').stat().st_size / 2**20:.1f}" if built else "-"
        table.add_row(
            name, "yes" if built else ("stale" if manifest.exists() else "no"), size, spec.package, spec.description
        )
    for path in sorted(cache_dir.glob("*/manifest.json")) if cache_dir.is_dir() else []:
        if path.parent.name in CATALOG:
            continue
        try:
            facts = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            continue
        model_file = path.parent / facts.get("model_file", "model.onnx")
        size = f"{model_file.stat().st_size / 2**20:.1f}" if model_file.exists() else "-"
        table.add_row(path.parent.name, "imported", size, facts.get("source", "-"), facts.get("description", ""))
    console.print(table)
