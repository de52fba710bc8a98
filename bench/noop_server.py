"""A model server with the identity model: the no-op end of `bench model-server`'s transport step, run in its
own process as a real server is.

    python -m bench.noop_server --socket PATH --dim 384
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path


def serve_identity(socket_path: Path, dim: int) -> None:
    from pipeline import logs
    from pipeline.model.identity import IDENTITY, IdentityEncoder
    from pipeline.model.server import ModelServer, serve_until_stopped

    logs.configure("json", "warning")  # no line per batch: the transport step measures, it does not log

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_until_stopped(ModelServer({IDENTITY: IdentityEncoder(dim)}), socket_path, stop)

    asyncio.run(main())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A model server with the identity model (for the bench).")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    serve_identity(args.socket, args.dim)
