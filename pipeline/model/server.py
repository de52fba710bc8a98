"""One model process per host: loads each encoder once and serves embeddings to the host's workers over a Unix
socket (`slmstream model-server --socket PATH`), batching across them.

    worker 1 ─┐                          ┌─ model call (one thread) ─┐
    worker 2 ─┼─ encode(texts) ─► queue ─┤  requests that arrived    ├─► each worker gets its rows back
    worker N ─┘                          └─ while it was busy, merged ┘

Requests that arrive while the model is busy are merged into the next model call (whole requests, up to
`max_batch` texts; a bigger request runs alone), so N workers keep one model as busy as one worker with N
times the traffic. When the model is idle a request runs at once: the workers already batch against their
deadlines, waiting here would only add latency.

The server encodes; it does not score labels. Each worker keeps its own label prototypes (it encodes its
taxonomy through the server at start) and scores its rows itself, so workers with different taxonomies, or a
taxonomy rolled out worker by worker, share one server, and a merged batch needs no per-request labels.

Security: the socket file is created mode 0600 in a directory the user owns and that no one else can write
to, and a peer whose uid differs from ours is dropped (SO_PEERCRED). A lock file next to the socket keeps a
second server off it; a socket file no server answers on is a leftover and is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import stat
import struct
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from pipeline.config import MAX_SOCKET_PATH_BYTES
from pipeline.model.base import Encoder
from pipeline.model.thread import ModelThread
from pipeline.model.wire import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    array_meta,
    read_frame,
    write_frame,
)

log = structlog.get_logger(__name__)

MAX_REQUEST_TEXTS = 4096
MAX_IN_FLIGHT_PER_CONNECTION = 64  # a connection's further frames wait unread: back-pressure on that client


class ServerStartError(Exception):
    """The server cannot start on this socket path; the message says why and what to do."""


# ---- the socket file ---------------------------------------------------------------------------------------
def check_socket_dir(path: Path) -> None:
    """The socket's directory must be ours and writable by no one else (else someone could swap the file)."""
    parent = path.parent
    try:
        st = parent.stat()
    except FileNotFoundError:
        raise ServerStartError(f"directory {parent} does not exist: create it (mode 0700) or choose another") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ServerStartError(f"{parent} is not a directory")
    if st.st_uid != os.getuid():
        raise ServerStartError(
            f"directory {parent} belongs to uid {st.st_uid}, not to this user ({os.getuid()}): put the socket in a "
            "directory you own, e.g. $XDG_RUNTIME_DIR/slmstream/"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ServerStartError(
            f"directory {parent} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"run `chmod go-w {parent}` or choose a private directory"
        )


def server_answers(path: Path, timeout: float = 1.0) -> bool:
    """True when something accepts connections on the socket file."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return False
        return True


def claim_socket_path(path: Path) -> int:
    """Take the lock next to the socket and clear a stale socket file; return the lock's fd (held while we run)."""
    if len(os.fsencode(str(path))) > MAX_SOCKET_PATH_BYTES:
        raise ServerStartError(
            f"socket path {path} is {len(os.fsencode(str(path)))} bytes; the limit is {MAX_SOCKET_PATH_BYTES}: "
            "choose a shorter path"
        )
    check_socket_dir(path)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ServerStartError(f"another model server holds {lock_path}: it serves {path}; stop it first") from None
    try:
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ServerStartError(f"{path} exists and is not a socket: remove it or choose another path")
            if server_answers(path):
                raise ServerStartError(f"a server already answers on {path}: stop it first or choose another path")
            log.warning("stale_socket_removed", path=str(path))
            path.unlink()
    except BaseException:
        os.close(fd)
        raise
    return fd


def bind_private_socket(path: Path) -> socket.socket:
    """A listening socket whose file is mode 0600 from the start (umask during bind: no window for others)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def peer_uid(sock: socket.socket | None) -> int | None:
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    uid: int = struct.unpack("3i", creds)[1]  # (pid, uid, gid)
    return uid


# ---- requests and batching --------------------------------------------------------------------------------
@dataclass(eq=False)
class _Connection:
    peer: str
    writer: asyncio.StreamWriter
    closed: bool = False


@dataclass(eq=False)
class _Request:
    model: str
    texts: list[str]
    conn: _Connection
    reply: asyncio.Future[tuple[np.ndarray, dict[str, Any]]] = field(repr=False)


@dataclass
class ServerStats:
    model_calls: int = 0
    texts: int = 0
    requests: int = 0
    merged_calls: int = 0  # model calls that served more than one request


class ModelServer:
    """Serves `encode` for each model in `models` to the clients of one Unix socket."""

    def __init__(
        self,
        models: Mapping[str, Encoder],
        *,
        max_batch: int = 64,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        check_peer_uid: bool = True,
    ) -> None:
        if not models:
            raise ValueError("a model server needs at least one model")
        self.models = dict(models)
        self.max_batch = max_batch
        self.max_frame_bytes = max_frame_bytes
        self.check_peer_uid = check_peer_uid
        self.stats = ServerStats()
        self._pending: deque[_Request] = deque()
        self._wake = asyncio.Event()
        self._model_thread = ModelThread("model-server")
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._runner: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._path: Path | None = None
        self._inode: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            name: {"hash": m.content_hash, "dim": int(getattr(m, "dim", 0) or 0)} for name, m in self.models.items()
        }

    # ---- lifecycle ------------------------------------------------------------------------------------
    async def start(self, path: Path) -> None:
        self._lock_fd = claim_socket_path(path)
        try:
            sock = bind_private_socket(path)
        except OSError as exc:
            self._release_lock()
            raise ServerStartError(f"cannot listen on {path}: {exc}") from exc
        self._path, self._inode = path, path.stat().st_ino
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=2**16)
        self._runner = asyncio.ensure_future(self._run())
        log.info("model_server_listening", socket=str(path), models=self.describe(), max_batch=self.max_batch)

    async def close(self) -> None:
        """Stop accepting, finish the model call in flight, drop the connections, remove the socket file."""
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for conn in list(self._connections):
            conn.closed = True
            conn.writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        # the model call in flight ends on its own; wait for it off the loop
        await self._model_thread.aclose()
        if self._path is not None:
            # only our own file: a server started after us on the same path keeps its socket
            with contextlib.suppress(FileNotFoundError):
                if self._path.stat().st_ino == self._inode:
                    self._path.unlink()
        self._release_lock()
        log.info("model_server_stopped", **self._stats_fields())

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _stats_fields(self) -> dict[str, Any]:
        s = self.stats
        return {"model_calls": s.model_calls, "texts": s.texts, "requests": s.requests, "merged_calls": s.merged_calls}

    # ---- connections ----------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock)
        conn = _Connection(peer=f"uid={uid} fd={sock.fileno() if sock else '?'}", writer=writer)
        if self.check_peer_uid and uid is not None and uid != os.getuid():
            log.warning("model_server_peer_refused", peer_uid=uid)
            writer.close()
            return
        self._connections.add(conn)
        room = asyncio.Semaphore(MAX_IN_FLIGHT_PER_CONNECTION)
        try:
            while True:
                await room.acquire()
                try:
                    frame = await read_frame(reader, self.max_frame_bytes)
                except ProtocolError as exc:
                    log.warning("model_server_protocol_error", peer=conn.peer, error=str(exc))
                    with contextlib.suppress(Exception):
                        await write_frame(writer, {"id": None, "ok": False, "error": f"protocol error: {exc}"})
                    return
                if frame is None:
                    return
                self._spawn(self._answer(conn, frame[0], room))
        except (ConnectionError, OSError):
            return
        finally:
            conn.closed = True
            self._connections.discard(conn)
            writer.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, conn: _Connection, header: dict[str, Any], room: asyncio.Semaphore) -> None:
        rid = header.get("id")
        try:
            reply, body = await self._handle(conn, header)
        except RequestError as exc:
            reply, body = {"ok": False, "error": str(exc)}, b""
        except Exception as exc:  # the model failed: the client sees why and may retry
            reply, body = {"ok": False, "error": f"model call failed: {exc!r}"}, b""
        finally:
            room.release()
        if conn.closed:
            return
        with contextlib.suppress(ConnectionError, OSError):
            await write_frame(conn.writer, {"id": rid, **reply}, body)

    async def _handle(self, conn: _Connection, header: dict[str, Any]) -> tuple[dict[str, Any], bytes | memoryview]:
        op = header.get("op")
        if op == "hello":
            info = {"protocol": PROTOCOL_VERSION, "models": self.describe(), "max_batch": self.max_batch}
            return {"ok": True, "pid": os.getpid(), **info}, b""
        if op != "encode":
            raise RequestError(f"unknown op {op!r}: this server answers hello and encode")
        model, texts = header.get("model"), header.get("texts")
        if model not in self.models:
            raise RequestError(f"model {model!r} is not served here (serving: {', '.join(self.models)})")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise RequestError("texts must be a list of strings")
        if len(texts) > MAX_REQUEST_TEXTS:
            raise RequestError(f"{len(texts)} texts in one request; at most {MAX_REQUEST_TEXTS}")
        fut: asyncio.Future[tuple[np.ndarray, dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(model, texts, conn, fut))
        self._wake.set()
        embeddings, extra = await fut
        meta, body = array_meta(embeddings)
        return {"ok": True, **meta, **extra}, body

    # ---- the model loop -------------------------------------------------------------------------------
    def _take(self) -> list[_Request]:
        """The oldest request and the queued requests for the same model that fit with it in max_batch."""
        while self._pending and self._pending[0].conn.closed:
            self._pending.popleft().reply.cancel()  # its client is gone: nobody to answer
        if not self._pending:
            return []
        first = self._pending.popleft()
        taken, size = [first], len(first.texts)
        keep: deque[_Request] = deque()
        while self._pending:
            r = self._pending.popleft()
            if r.conn.closed:
                r.reply.cancel()
            elif r.model == first.model and size + len(r.texts) <= self.max_batch:
                taken.append(r)
                size += len(r.texts)
            else:
                keep.append(r)
        self._pending = keep
        return taken

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            batch = self._take()
            if not batch:
                continue
            model = self.models[batch[0].model]
            texts = [t for r in batch for t in r.texts]
            try:
                embeddings, seconds = await self._model_thread.timed(partial(_encode, model, texts))
            except Exception as exc:
                if len(batch) == 1:
                    _fail(batch[0], exc)
                    continue
                # one request's texts may be what broke the call: run each alone, so only it fails
                log.warning("model_server_merged_call_failed", requests=len(batch), error=repr(exc))
                for r in batch:
                    try:
                        emb, secs = await self._model_thread.timed(partial(_encode, model, r.texts))
                    except Exception as exc1:
                        _fail(r, exc1)
                    else:
                        self._deliver([r], emb, secs)
                continue
            self._deliver(batch, embeddings, seconds)

    def _deliver(self, batch: Sequence[_Request], embeddings: np.ndarray, seconds: float) -> None:
        size = sum(len(r.texts) for r in batch)
        s = self.stats
        s.model_calls += 1
        s.texts += size
        s.requests += len(batch)
        s.merged_calls += len(batch) > 1
        log.info(
            "model_server_batch",
            model=batch[0].model,
            size=size,
            requests=len(batch),
            clients=len({id(r.conn) for r in batch}),
            model_ms=round(seconds * 1000, 2),
            queued=len(self._pending),
        )
        start = 0
        for r in batch:
            rows = embeddings[start : start + len(r.texts)]
            start += len(r.texts)
            if not r.reply.done():
                r.reply.set_result((rows, {"model_s": seconds, "batch": size, "requests": len(batch)}))


class RequestError(Exception):
    """A request this server will not run (unknown op or model, bad texts); sent back to the client."""


def _encode(model: Encoder, texts: list[str]) -> np.ndarray:
    out = np.asarray(model.encode(texts), dtype=np.float32)
    if out.shape[0] != len(texts):
        raise RuntimeError(f"model returned {out.shape[0]} rows for {len(texts)} texts")
    return out


def _fail(r: _Request, exc: Exception) -> None:
    log.warning("model_server_call_failed", model=r.model, size=len(r.texts), error=repr(exc))
    if not r.reply.done():
        r.reply.set_exception(exc)


async def serve_until_stopped(server: ModelServer, path: Path, stop: asyncio.Event) -> None:
    await server.start(path)
    try:
        await stop.wait()
    finally:
        await server.close()
