"""`slmstream bench classify`: the bare model vs the whole pipeline, in one run, on the same texts."""

from __future__ import annotations

import typer

app = typer.Typer(help="Benchmarks (not tests): ratios measured in one run.", no_args_is_help=True)
