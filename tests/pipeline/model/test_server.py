"""pipeline/model/server.py on a real Unix socket (in a short private directory: conftest.py), with a fake
model: each client gets its own rows, requests that arrive while the model is busy share the next model call,
and the socket file is private."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from pipeline.model.remote import ModelServerClient, ModelServerError
from pipeline.model.server import ModelServer, ServerStartError, claim_socket_path
from pipeline.model.wire import PREFIX, read_frame, write_frame

DIM = 4


def row(text: str) -> np.ndarray:
    """A vector only this text gets: [len, first char, last char, 1]."""
    return np.array([len(text), ord(text[0]) if text else 0, ord(text[-1]) if text else 0, 1.0], dtype=np.float32)


class FakeModel:
    """Records each call's texts; `gate` (when set) holds a call in the model until the test releases it."""

    name = "fake"
    content_hash = "sha256:fake"
    dim = DIM

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test never released the model"
        if "boom" in texts:
            raise ValueError("the fake model cannot encode 'boom'")
        return np.stack([row(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)


@pytest.fixture
async def served(sock_path: Path) -> AsyncIterator[tuple[ModelServer, FakeModel]]:
    model = FakeModel()
    server = ModelServer({"fake": model}, max_batch=8)
    await server.start(sock_path)
    yield server, model
    await server.close()


async def test_round_trip_returns_each_texts_row_in_order(served, sock_path: Path) -> None:
    server, _ = served
    client = ModelServerClient(sock_path, wait_s=2)
    hello = await client.hello()
    assert hello["models"] == {"fake": {"hash": "sha256:fake", "dim": DIM}} and hello["pid"] == os.getpid()
    texts = ["hello", "a", "zz top", "é"]
    rows, header = await client.encode("fake", texts)
    np.testing.assert_array_equal(rows, np.stack([row(t) for t in texts]))
    assert header["batch"] == 4 and header["requests"] == 1 and header["model_s"] >= 0
    empty, _ = await client.encode("fake", [])
    assert empty.shape == (0, DIM)
    await client.close()


async def test_requests_arriving_while_the_model_is_busy_share_the_next_call(served, sock_path: Path) -> None:
    server, model = served
    model.gate = threading.Event()
    clients = [ModelServerClient(sock_path, wait_s=2) for _ in range(4)]
    first = asyncio.ensure_future(clients[0].encode("fake", ["first"]))
    assert await asyncio.to_thread(model.entered.wait, 5)  # the model is busy with client 0's request
    batches = [["b1", "b2"], ["c1"], ["d1", "d2", "d3"]]
    others = [asyncio.ensure_future(c.encode("fake", t)) for c, t in zip(clients[1:], batches, strict=True)]
    while len(server._pending) < 3:  # noqa: SLF001  wait until the server has queued the requests; all three queued behind the busy model
        await asyncio.sleep(0.005)
    model.gate.set()
    results = await asyncio.gather(first, *others)

    assert model.calls == [["first"], ["b1", "b2", "c1", "d1", "d2", "d3"]]  # one merged call for three clients
    for (rows, header), texts in zip(results[1:], batches, strict=True):
        np.testing.assert_array_equal(rows, np.stack([row(t) for t in texts]))  # each got its own rows back
        assert header["batch"] == 6 and header["requests"] == 3
    assert server.stats.model_calls == 2 and server.stats.merged_calls == 1
    for c in clients:
        await c.close()


async def test_a_merged_call_holds_at_most_max_batch_texts(served, sock_path: Path) -> None:
    server, model = served  # max_batch=8
    model.gate = threading.Event()
    client = ModelServerClient(sock_path, wait_s=2)
    first = asyncio.ensure_future(client.encode("fake", ["x"]))
    assert await asyncio.to_thread(model.entered.wait, 5)
    sizes = [5, 3, 2, 9]  # 5+3 fill a call; 2 starts the next; 9 is over max_batch and runs alone
    queued = []
    for i, n in enumerate(sizes):
        queued.append(asyncio.ensure_future(client.encode("fake", [f"r{i}-{j}" for j in range(n)])))
        while len(server._pending) < i + 1:  # noqa: SLF001  wait until the server has queued the requests
            await asyncio.sleep(0.005)
    model.gate.set()
    await asyncio.gather(first, *queued)
    assert [len(c) for c in model.calls] == [1, 8, 2, 9]
    await client.close()


async def test_a_failing_request_fails_alone_when_merged(served, sock_path: Path) -> None:
    server, model = served
    model.gate = threading.Event()
    good, bad, busy = (ModelServerClient(sock_path, wait_s=2) for _ in range(3))
    first = asyncio.ensure_future(busy.encode("fake", ["x"]))
    assert await asyncio.to_thread(model.entered.wait, 5)
    ok = asyncio.ensure_future(good.encode("fake", ["fine", "also fine"]))
    failing = asyncio.ensure_future(bad.encode("fake", ["boom"]))
    while len(server._pending) < 2:  # noqa: SLF001  wait until the server has queued the requests
        await asyncio.sleep(0.005)
    model.gate.set()
    await first
    rows, _ = await ok
    np.testing.assert_array_equal(rows, np.stack([row("fine"), row("also fine")]))
    with pytest.raises(ModelServerError, match="cannot encode 'boom'"):
        await failing
    # the merged call failed, then each request ran alone
    assert model.calls[1:] == [["fine", "also fine", "boom"], ["fine", "also fine"], ["boom"]]
    for c in (good, bad, busy):
        await c.close()


async def test_bad_requests_get_an_error_reply_and_the_connection_stays_usable(served, sock_path: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(sock_path))
    cases = [
        ({"id": 1, "op": "encode", "model": "nope", "texts": ["a"]}, "not served here"),
        ({"id": 2, "op": "encode", "model": "fake", "texts": ["a", 3]}, "list of strings"),
        ({"id": 3, "op": "encode", "model": "fake", "texts": "a"}, "list of strings"),
        ({"id": 4, "op": "classify"}, "unknown op"),
    ]
    for header, match in cases:
        await write_frame(writer, header)
        reply, body = await asyncio.wait_for(read_frame(reader), 5)
        assert reply["id"] == header["id"] and reply["ok"] is False and match in reply["error"], reply
    await write_frame(writer, {"id": 5, "op": "encode", "model": "fake", "texts": ["ok"]})
    reply, body = await asyncio.wait_for(read_frame(reader), 5)
    assert reply["ok"] is True and reply["shape"] == [1, DIM] and len(body) == DIM * 4
    writer.close()


async def test_garbage_drops_only_that_connection(served, sock_path: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(sock_path))
    writer.write(PREFIX.pack(2**30, 0))  # over the frame limit
    await writer.drain()
    reply, _ = await asyncio.wait_for(read_frame(reader), 5)
    assert reply["ok"] is False and "protocol error" in reply["error"]
    assert await asyncio.wait_for(read_frame(reader), 5) is None  # closed by the server
    writer.close()
    client = ModelServerClient(sock_path, wait_s=2)
    rows, _ = await client.encode("fake", ["still serving"])
    assert rows.shape == (1, DIM)
    await client.close()


# ---- the socket file ----------------------------------------------------------------------------------------
async def test_socket_file_is_private_and_removed_at_close(sock_path: Path) -> None:
    server = ModelServer({"fake": FakeModel()})
    await server.start(sock_path)
    st = sock_path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    await server.close()
    assert not sock_path.exists()


async def test_refuses_to_start_when_a_server_answers(served, sock_path: Path) -> None:
    with pytest.raises(ServerStartError, match="another model server holds"):
        await ModelServer({"fake": FakeModel()}).start(sock_path)
    # also without the lock (a server of another build, or a different program) it is not clobbered
    lock = sock_path.with_name(sock_path.name + ".lock")
    lock.unlink()
    with pytest.raises(ServerStartError, match="already answers"):
        claim_socket_path(sock_path)
    assert sock_path.exists()


async def test_a_stale_socket_file_is_replaced(sock_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_path))  # bound, never listening, then closed: what a killed server leaves
    stale.close()
    server = ModelServer({"fake": FakeModel()})
    await server.start(sock_path)
    client = ModelServerClient(sock_path, wait_s=2)
    assert (await client.encode("fake", ["x"]))[0].shape == (1, DIM)
    await client.close()
    await server.close()


@pytest.mark.parametrize(
    ("prepare", "match"),
    [
        (lambda p: p.write_text("not a socket"), "not a socket"),
        (lambda p: p.parent.chmod(0o770), "writable by group or others"),
        (lambda p: p.parent.rmdir(), "does not exist"),
    ],
)
def test_unsafe_or_wrong_paths_are_refused(sock_path: Path, prepare, match: str) -> None:
    prepare(sock_path)
    with pytest.raises(ServerStartError, match=match):
        claim_socket_path(sock_path)


def test_a_too_long_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="limit is 107"):
        claim_socket_path(tmp_path / ("x" * 120))
