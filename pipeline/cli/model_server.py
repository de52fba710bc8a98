"""`slmstream model-server --socket PATH`: one model process that this host's workers share (pipeline/model/server.py).

Workers use it when `model.server_socket` (env SLMSTREAM_MODEL__SERVER_SOCKET) is the same path.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import fail, settings_or_exit
from pipeline.config import Settings
from pipeline.model.base import Encoder, ModelError


def load_models(settings: Settings, names: list[str]) -> dict[str, Encoder]:
    from pipeline.model.loading import open_encoder

    return {name: open_encoder(settings.model, name) for name in names}


def model_server(
    socket_path: Annotated[
        Path | None,
        typer.Option("--socket", help="Unix socket to serve on (default: model.server_socket)."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", help="Model to serve, repeatable (default: model.encoder, + model.fallback for degrade)."
        ),
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option(min=1, help="Most texts merged into one model call (default: 2 x batching.max_batch)."),
    ] = None,
) -> None:
    """Serve the model to this host's workers over a Unix socket, batching across them (Ctrl-C or SIGTERM stops)."""
    from pipeline import logs
    from pipeline.model.server import ModelServer, ServerStartError, serve_until_stopped

    settings = settings_or_exit()
    logs.configure(settings.log_format, settings.log_level)
    path = socket_path.expanduser() if socket_path is not None else settings.model.server_socket
    if path is None:
        fail("give --socket PATH, or set model.server_socket (SLMSTREAM_MODEL__SERVER_SOCKET)", 2)
    names = model or [settings.model.encoder]
    if not model and settings.batching.late_policy == "degrade":
        names.append(settings.model.fallback)
    try:
        models = load_models(settings, list(dict.fromkeys(names)))
    except ModelError as exc:
        fail(f"cannot start: {exc}", 2)
    server = ModelServer(models, max_batch=max_batch or 2 * settings.batching.max_batch)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_until_stopped(server, path, stop)

    try:
        asyncio.run(main())
    except ServerStartError as exc:
        fail(f"cannot start the model server: {exc}")
