"""A worker's side of the model server (pipeline/model/server.py): an `Encoder` like any other.

    scheduler ─classify(texts)→ ModelWorker (its thread: LabelClassifier) ─encode→ RemoteEncoder
        ─frame→ Unix socket ─→ model server (batches across the host's workers) ─rows→ scores here

The server only encodes. The label prototypes live here: at start the worker encodes its own taxonomy through
the server and scores every batch's rows itself (a (n x dim) @ (dim x labels) product), so the server needs
no labels and workers with different taxonomies share it.

When the server goes away (restart, upgrade) a call waits for it, reconnecting with backoff, for up to
`model.server_wait_s`, and a request lost with the connection is sent once more (encoding has no side
effects; a second loss suggests the request itself takes the server down). After that, or on an error the
server reports, the call raises and the scheduler retries the batch, then dead-letters it. If the server comes back
with a different model file than the prototypes were built with, calls fail with a ModelError saying to
restart the worker: scores against the old prototypes would be wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from pipeline.config import Settings
from pipeline.model.base import ModelError
from pipeline.model.classifier import LabelClassifier
from pipeline.model.wire import MAX_FRAME_BYTES, PROTOCOL_VERSION, ProtocolError, decode_array, read_frame, write_frame
from pipeline.model.worker import ModelWorker

log = structlog.get_logger(__name__)

BACKOFF_START_S = 0.05
BACKOFF_MAX_S = 1.0
MAX_SENDS = 2  # a request lost with its connection is sent once more (the server restarted), not again


class ModelServerUnavailable(ModelError):
    """No model server answered within the wait."""


class ModelServerError(ModelError):
    """The model server answered a request with an error."""


class _ConnectionLost(Exception):
    pass


class _Connection:
    """One open connection: requests go out tagged with an id; a reader task matches the replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame_bytes: int) -> None:
        self.reader, self.writer = reader, writer
        self.max_frame_bytes = max_frame_bytes
        self.pending: dict[int, asyncio.Future[tuple[dict[str, Any], bytes]]] = {}
        self.alive = True
        self.hello: dict[str, Any] = {}
        self._task = asyncio.ensure_future(self._read_replies())

    async def _read_replies(self) -> None:
        error: BaseException = _ConnectionLost("the model server closed the connection")
        try:
            while True:
                frame = await read_frame(self.reader, self.max_frame_bytes)
                if frame is None:
                    break
                header, body = frame
                rid = header.get("id")
                fut = self.pending.pop(rid, None) if isinstance(rid, int) else None
                if fut is None:
                    if header.get("ok") is False:  # e.g. the server could not parse what we sent
                        error = ModelServerError(f"model server: {header.get('error')}")
                        break
                    continue
                if not fut.done():
                    fut.set_result((header, body))
        except (ConnectionError, OSError, ProtocolError) as exc:
            error = _ConnectionLost(f"connection to the model server failed: {exc!r}")
        finally:
            self.alive = False
            self.writer.close()
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(error)
            self.pending.clear()

    async def call(self, rid: int, header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        if not self.alive:
            raise _ConnectionLost("connection closed")
        fut: asyncio.Future[tuple[dict[str, Any], bytes]] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        try:
            await write_frame(self.writer, {"id": rid, **header})
        except (ConnectionError, OSError) as exc:
            self.pending.pop(rid, None)
            raise _ConnectionLost(f"sending to the model server failed: {exc!r}") from exc
        try:
            return await fut
        finally:
            self.pending.pop(rid, None)

    async def close(self) -> None:
        self.alive = False
        self.writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


class ModelServerClient:
    """The connection of one worker process to the model server; shared by its primary and fallback models."""

    def __init__(
        self,
        path: Path,
        *,
        wait_s: float = 30.0,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.path = path
        self.wait_s = wait_s
        self.max_frame_bytes = max_frame_bytes
        self.clock, self.sleep = clock, sleep
        self.models: dict[str, dict[str, Any]] = {}  # name → {"hash", "dim"} as first seen: later ones must match
        self.reconnects = 0
        self._conn: _Connection | None = None
        self._connecting = asyncio.Lock()
        self._ids = itertools.count(1)

    async def hello(self) -> dict[str, Any]:
        conn = await self._connection(self.clock() + self.wait_s)
        return conn.hello

    async def model_info(self, name: str) -> dict[str, Any]:
        """The served model's hash and dim (ModelError when the server does not serve it)."""
        served = (await self.hello())["models"]
        if name not in served:
            raise ModelError(
                f"the model server on {self.path} serves {', '.join(served)}, not {name}: start it with "
                f"`slmstream model-server --socket {self.path} --model {name}`"
            )
        self.models.setdefault(name, served[name])
        return self.models[name]

    async def encode(self, model: str, texts: Sequence[str]) -> tuple[np.ndarray, dict[str, Any]]:
        """Embeddings of `texts` (rows in order) and what the server said about the call (model_s, batch)."""
        header, body = await self.request({"op": "encode", "model": model, "texts": list(texts)})
        try:
            rows = decode_array(header, body)
        except ProtocolError as exc:
            raise ModelServerError(f"model server sent a bad array: {exc}") from None
        if rows.ndim != 2 or rows.shape[0] != len(texts):
            raise ModelServerError(f"model server sent shape {rows.shape} for {len(texts)} texts")
        return rows, header

    async def request(self, header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """Send a request, resending it after a reconnect (at most MAX_SENDS sends, within `wait_s`); raise the
        server's errors."""
        deadline = self.clock() + self.wait_s
        sends = 0
        while True:
            conn = await self._connection(deadline)
            sends += 1
            try:
                reply, body = await conn.call(next(self._ids), header)
            except _ConnectionLost as exc:
                if sends >= MAX_SENDS:  # a request that takes the server down must not do it again and again
                    raise ModelServerUnavailable(
                        f"model server on {self.path}: {exc}; the connection was lost {sends} times while this "
                        "request was in flight (does the server crash on it? see its log)"
                    ) from None
                if self.clock() >= deadline:
                    raise ModelServerUnavailable(
                        f"model server on {self.path}: {exc} (waited {self.wait_s:.0f}s)"
                    ) from None
                log.warning("model_server_connection_lost", socket=str(self.path), error=str(exc))
                continue
            if reply.get("ok") is not True:
                raise ModelServerError(f"model server: {reply.get('error', 'no reason given')}")
            return reply, body

    async def _connection(self, deadline: float) -> _Connection:
        conn = self._conn
        if conn is not None and conn.alive:
            return conn
        async with self._connecting:
            if self._conn is not None and self._conn.alive:
                return self._conn
            delay = BACKOFF_START_S
            while True:
                try:
                    conn = await self._open()
                    break
                except (OSError, _ConnectionLost, ProtocolError) as exc:
                    left = deadline - self.clock()
                    if left <= 0:
                        raise ModelServerUnavailable(
                            f"no model server answers on {self.path} ({exc.__class__.__name__}: {exc}) after "
                            f"{self.wait_s:.0f}s: start one with `slmstream model-server --socket {self.path}`"
                        ) from None
                    await self.sleep(min(delay, left))
                    delay = min(delay * 2, BACKOFF_MAX_S)
            if self._conn is not None:
                self.reconnects += 1
                log.info("model_server_reconnected", socket=str(self.path), server_pid=conn.hello.get("pid"))
            self._conn = conn
            return conn

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_unix_connection(str(self.path), limit=2**16)
        conn = _Connection(reader, writer, self.max_frame_bytes)
        reply, _ = await conn.call(0, {"op": "hello", "protocol": PROTOCOL_VERSION})
        if reply.get("ok") is not True or reply.get("protocol") != PROTOCOL_VERSION:
            await conn.close()
            raise ModelError(f"the server on {self.path} does not speak model-server protocol {PROTOCOL_VERSION}")
        served = reply.get("models") or {}
        for name, seen in self.models.items():
            now = served.get(name)
            if now is None or now.get("hash") != seen.get("hash"):
                await conn.close()
                raise ModelError(
                    f"the model server on {self.path} now serves {name} as {now and now.get('hash')}, but this "
                    f"worker's label prototypes were built with {seen.get('hash')}: restart the worker"
                )
        conn.hello = reply
        return conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class RemoteEncoder:
    """An `Encoder` (base.py) over the model server. `encode` blocks its (non-loop) thread on the worker's event loop,
    which does the I/O; `encode_async` is the same call for code on the loop."""

    def __init__(self, client: ModelServerClient, name: str, info: dict[str, Any], loop: asyncio.AbstractEventLoop):
        self.client = client
        self.name = name
        self.content_hash: str = info["hash"]
        self.dim: int = int(info.get("dim") or 0)
        self.last_call: dict[str, Any] = {}  # what the server said about the latest call (model_s, batch)
        self._loop = loop
        self._loop_thread = threading.get_ident() if loop.is_running() else None

    async def encode_async(self, texts: Sequence[str]) -> np.ndarray:
        rows, header = await self.client.encode(self.name, texts)
        self.last_call = {k: header.get(k) for k in ("model_s", "batch", "requests")}
        return rows

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("RemoteEncoder.encode blocks: on the event loop, await encode_async instead")
        future = asyncio.run_coroutine_threadsafe(self.encode_async(texts), self._loop)
        try:
            return future.result(timeout=self.client.wait_s * 2 + 10)
        except FutureTimeout:
            future.cancel()
            raise ModelServerUnavailable(f"no reply from the model server on {self.client.path}") from None


async def connect_remote_worker(
    settings: Settings, model: str, client: ModelServerClient, *, name: str = "model"
) -> ModelWorker:
    """Ask the server for `model`, encode this worker's taxonomy through it, and run its classifier on a model
    thread like an in-process one. Its `classify` seconds are then the round trip this worker sees (server
    queue + model + transport): what its deadline planning has to budget for, since batches of other workers
    may be ahead of its own."""
    info = await client.model_info(model)
    encoder = RemoteEncoder(client, model, info, asyncio.get_running_loop())
    c = settings.classifier
    classifier = await asyncio.to_thread(
        LabelClassifier, encoder, settings.labels, min_confidence=c.min_confidence, temperature=c.temperature
    )
    return ModelWorker(classifier, name)


async def connect_workers(settings: Settings) -> tuple[ModelWorker, ModelWorker | None]:
    """The primary (and, for late_policy=degrade, the fallback) model, both over one connection."""
    m = settings.model
    assert m.server_socket is not None
    client = ModelServerClient(m.server_socket, wait_s=m.server_wait_s)
    primary = await connect_remote_worker(settings, m.encoder, client)
    fallback = None
    if settings.batching.late_policy == "degrade":
        fallback = await connect_remote_worker(settings, m.fallback, client, name="fallback")
    log.info("model_server_connected", socket=str(m.server_socket), server_pid=(await client.hello()).get("pid"))
    return primary, fallback
