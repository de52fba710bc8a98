"""pipeline/model/remote.py: the model server is an Encoder like an in-process model; its client waits for a
restarting server and resends what was in flight once, gives up with a clear error, and refuses a server that
came back with another model."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Label, Settings
from pipeline.model.base import Encoder, ModelError
from pipeline.model.classifier import LabelClassifier
from pipeline.model.remote import (
    ModelServerClient,
    ModelServerUnavailable,
    RemoteEncoder,
    connect_remote_worker,
    connect_workers,
)
from pipeline.model.server import ModelServer
from pipeline.model.wire import read_frame, write_frame
from pipeline.model.worker import ModelWorker
from tests.pipeline.model.test_server import DIM, FakeModel, row

LABELS = {
    "short": Label(description="a", examples=["b", "c"]),
    "long": Label(description="a long description", examples=["another long example text"]),
}


@pytest.fixture(autouse=True)
def _no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the labels given here: config/slmstream.yaml would add its own."""
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(tmp_path / "absent.yaml"))


def settings(sock: Path, **model: object) -> Settings:
    return Settings(labels=LABELS, model={"server_socket": str(sock), "encoder": "fake", **model})


async def test_remote_worker_classifies_exactly_like_the_in_process_worker(sock_path: Path) -> None:
    server = ModelServer({"fake": FakeModel()})
    await server.start(sock_path)
    client = ModelServerClient(sock_path, wait_s=2)
    try:
        remote = await connect_remote_worker(settings(sock_path), "fake", client)
        local = ModelWorker(LabelClassifier(FakeModel(), LABELS, min_confidence=0.35, temperature=0.05))
        texts = ["x", "a fairly long text here", "mid size", "é"]
        got, seconds = await remote.classify(texts)
        want, _ = await local.classify(texts)
        assert got == want and seconds > 0
        assert remote.classifier.info == local.classifier.info  # name and hash of the served model
        assert remote.classifier.names == ["short", "long"]
        np.testing.assert_allclose(remote.classifier.prototypes, local.classifier.prototypes)
        assert isinstance(remote.classifier.model, RemoteEncoder) and isinstance(remote.classifier.model, Encoder)
        await remote.aclose()
        await local.aclose()
    finally:
        await client.close()
        await server.close()


async def test_connect_workers_shares_one_connection_for_primary_and_fallback(sock_path: Path) -> None:
    server = ModelServer({"fake": FakeModel(), "fake-small": FakeModel()})
    await server.start(sock_path)
    try:
        s = settings(sock_path, fallback="fake-small")
        s.batching.late_policy = "degrade"
        primary, fallback = await connect_workers(s)
        assert fallback is not None
        client = primary.classifier.model.client
        assert client is fallback.classifier.model.client
        assert (await fallback.classify(["b"]))[0][0].label == "short"
        await client.close()
        await primary.aclose()
        await fallback.aclose()
    finally:
        await server.close()


async def test_a_model_the_server_does_not_serve_is_a_clear_error(sock_path: Path) -> None:
    server = ModelServer({"fake": FakeModel()})
    await server.start(sock_path)
    client = ModelServerClient(sock_path, wait_s=2)
    try:
        with pytest.raises(ModelError, match=r"serves fake, not minilm.*--model minilm"):
            await client.model_info("minilm")
    finally:
        await client.close()
        await server.close()


async def test_a_call_waits_for_a_restarting_server_and_resends(sock_path: Path) -> None:
    first = ModelServer({"fake": FakeModel()})
    await first.start(sock_path)
    backing_off = asyncio.Event()

    async def sleep(seconds: float) -> None:  # the client's backoff: a connect has failed
        backing_off.set()
        await asyncio.sleep(seconds)

    client = ModelServerClient(sock_path, wait_s=10, sleep=sleep)
    await client.model_info("fake")
    await first.close()  # the server goes away; the next call starts while it is down

    call = asyncio.ensure_future(client.encode("fake", ["after restart"]))
    await asyncio.wait_for(backing_off.wait(), 10)
    assert not call.done()  # waiting, not failing
    model = FakeModel()
    second = ModelServer({"fake": model})
    await second.start(sock_path)
    rows, _ = await asyncio.wait_for(call, 10)
    np.testing.assert_array_equal(rows, row("after restart")[None, :])
    assert client.reconnects == 1 and model.calls == [["after restart"]]
    await client.close()
    await second.close()


async def test_a_request_in_flight_when_the_server_dies_is_resent(sock_path: Path) -> None:
    model = FakeModel()
    model.gate = threading.Event()
    first = ModelServer({"fake": model})
    await first.start(sock_path)
    backing_off = asyncio.Event()

    async def sleep(seconds: float) -> None:  # the client's backoff: it lost the connection, reconnects fail
        backing_off.set()
        await asyncio.sleep(seconds)

    client = ModelServerClient(sock_path, wait_s=10, sleep=sleep)
    call = asyncio.ensure_future(client.encode("fake", ["in flight"]))
    assert await asyncio.to_thread(model.entered.wait, 5)
    closing = asyncio.ensure_future(first.close())  # drops the connection while the model still runs
    await asyncio.wait_for(backing_off.wait(), 10)
    model.gate.set()  # the first server's answer now has no connection to go to
    await closing
    restarted = FakeModel()
    second = ModelServer({"fake": restarted})
    await second.start(sock_path)
    rows, _ = await asyncio.wait_for(call, 10)
    np.testing.assert_array_equal(rows, row("in flight")[None, :])
    # the lost request went to the restarted server exactly once, over one new connection
    assert model.calls == [["in flight"]] and restarted.calls == [["in flight"]]
    assert client.reconnects == 1
    await client.close()
    await second.close()


async def test_a_request_that_takes_the_server_down_is_sent_twice_not_forever(sock_path: Path) -> None:
    """A server that dies on one request (here: drops the connection on every encode) sees it only twice."""
    encodes = 0

    async def crashing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal encodes
        while (frame := await read_frame(reader)) is not None:
            header, _ = frame
            if header["op"] == "hello":
                models = {"fake": {"hash": "sha256:fake", "dim": DIM}}
                await write_frame(writer, {"id": header["id"], "ok": True, "protocol": 1, "models": models})
            else:
                encodes += 1
                writer.close()
                return

    server = await asyncio.start_unix_server(crashing, path=str(sock_path))
    client = ModelServerClient(sock_path, wait_s=10)
    try:
        with pytest.raises(ModelServerUnavailable, match="lost 2 times"):
            await client.encode("fake", ["poison"])
        assert encodes == 2
    finally:
        await client.close()
        server.close()


async def test_no_server_fails_after_the_wait_naming_the_command(sock_path: Path) -> None:
    client = ModelServerClient(sock_path, wait_s=0.3)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(ModelServerUnavailable, match=r"no model server answers on .*slmstream model-server --socket"):
        await client.encode("fake", ["x"])
    assert 0.25 <= loop.time() - t0 < 3


async def test_reconnect_backoff_doubles_to_a_cap_and_stops_at_the_wait(sock_path: Path) -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    client = ModelServerClient(sock_path, wait_s=5.0, clock=lambda: now[0], sleep=fake_sleep)
    with pytest.raises(ModelServerUnavailable, match="after 5s"):
        await client.encode("fake", ["x"])
    assert slept[:6] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0])
    assert set(slept[6:-1]) == {1.0} and sum(slept) == pytest.approx(5.0)  # the last sleep ends at the deadline


async def test_a_server_back_with_another_model_file_is_refused(sock_path: Path) -> None:
    first = ModelServer({"fake": FakeModel()})
    await first.start(sock_path)
    client = ModelServerClient(sock_path, wait_s=2)
    await client.model_info("fake")
    await first.close()
    rebuilt = FakeModel()
    rebuilt.content_hash = "sha256:rebuilt"
    second = ModelServer({"fake": rebuilt})
    await second.start(sock_path)
    try:
        with pytest.raises(ModelError, match="restart the worker"):
            await client.encode("fake", ["x"])
    finally:
        await client.close()
        await second.close()


async def test_remote_encode_refuses_to_block_the_event_loop(sock_path: Path) -> None:
    server = ModelServer({"fake": FakeModel()})
    await server.start(sock_path)
    client = ModelServerClient(sock_path, wait_s=2)
    try:
        enc = RemoteEncoder(client, "fake", await client.model_info("fake"), asyncio.get_running_loop())
        with pytest.raises(RuntimeError, match="await encode_async"):
            enc.encode(["x"])
        assert (await asyncio.to_thread(enc.encode, ["x"])).shape == (1, DIM)  # from a thread: fine
        assert enc.last_call["batch"] == 1
    finally:
        await client.close()
        await server.close()


# ---- model.server_socket in the settings ------------------------------------------------------------------
def test_server_socket_defaults_to_in_process_and_empty_means_in_process() -> None:
    assert Settings(labels=LABELS).model.server_socket is None
    assert Settings(labels=LABELS, model={"server_socket": "  "}).model.server_socket is None


def test_server_socket_path_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at most 107"):
        Settings(labels=LABELS, model={"server_socket": "/tmp/" + "x" * 120})
    with pytest.raises(ValueError, match="is a directory"):
        Settings(labels=LABELS, model={"server_socket": str(tmp_path)})
    ok = Settings(labels=LABELS, model={"server_socket": str(tmp_path / "m.sock"), "server_wait_s": 5})
    assert ok.model.server_socket == tmp_path / "m.sock" and ok.model.server_wait_s == 5
