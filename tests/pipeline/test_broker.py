"""The embedded broker manager against the real tansu and noida-db binaries."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from typer.testing import CliRunner

from pipeline.broker import BrokerError, EmbeddedBroker, find_binary
from pipeline.cli.broker import app

ENGINES = ["tansu", "noida"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    """Running and not a zombie (a zombie's cmdline is empty)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""
    except OSError:
        return False


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def make_broker(state_dir: Path) -> Iterator:
    """Factory for brokers on free ports; whatever they started is stopped (or killed) at the end."""
    made: list[EmbeddedBroker] = []

    def make(engine: str, port: int | None = None) -> EmbeddedBroker:
        broker = EmbeddedBroker(engine=engine, port=port or free_port(), state_dir=state_dir)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        pid = broker.status().pid
        broker.stop()
        if pid is not None and not wait_gone(pid):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


async def roundtrip(bootstrap: str) -> bytes:
    """Produce one message and read it back by direct assignment (no group join to wait for)."""
    topic = f"broker-test-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", partition=0)
    finally:
        await producer.stop()
    # tansu waits out fetch_max_wait_ms before answering a fetch: keep it short.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        record = await consumer.getone()
    finally:
        await consumer.stop()
    return record.value


@pytest.mark.parametrize("engine", ENGINES)
async def test_start_produce_consume_stop(engine: str, make_broker) -> None:
    broker = make_broker(engine)
    started = broker.start()
    assert started.running and started.pid is not None and alive(started.pid)
    assert started.bootstrap == f"127.0.0.1:{broker.port}"
    assert started.url == f"kafka://127.0.0.1:{broker.port}"
    assert broker.status() == started
    state = json.loads(broker.state_file.read_text())
    assert state["pid"] == started.pid and state["engine"] == engine
    assert state["binary"] == str(find_binary(engine))
    if engine == "noida":
        assert started.data_dir is not None and started.data_dir.is_dir()

    assert await roundtrip(started.bootstrap) == b"hello"

    assert broker.stop() is True
    assert wait_gone(started.pid)
    after = broker.status()
    assert not after.running and after.pid is None
    assert not broker.state_file.exists()
    assert broker.stop() is False


@pytest.mark.parametrize("engine", ENGINES)
def test_start_twice_is_idempotent(engine: str, make_broker) -> None:
    broker = make_broker(engine)
    first = broker.start()
    assert broker.start().pid == first.pid
    # Another manager (say, another CLI call) on the same port and state dir finds the same broker,
    # and leaving its context must not stop a broker it did not start.
    with make_broker(engine, port=broker.port) as again:
        assert again.status().pid == first.pid
    assert broker.status().running
    # A different engine on the same port is refused rather than silently reused.
    other = make_broker("noida" if engine == "tansu" else "tansu", port=broker.port)
    with pytest.raises(BrokerError, match="already runs"):
        other.start()


@pytest.mark.parametrize("host", ["0.0.0.0", "198.51.100.10", "example.com", "::1"])
def test_refuses_non_loopback_host(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        EmbeddedBroker(host=host)


def test_an_unknown_engine_is_refused_with_the_choices() -> None:
    # The engine comes from CLI options as a plain string; the constructor is what checks it.
    with pytest.raises(ValueError, match="unknown broker engine 'kafka'; choose one of tansu, noida"):
        EmbeddedBroker("kafka")


def test_tansu_has_no_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="memory only"):
        EmbeddedBroker("tansu", data_dir=tmp_path)


@pytest.mark.parametrize("content", ["[]", '"broker"', "42", "null"])
def test_a_state_file_that_is_not_an_object_is_reported(content: str, state_dir: Path) -> None:
    # Valid JSON of the wrong shape: a BrokerError naming the file, not an AttributeError.
    broker = EmbeddedBroker(engine="tansu", port=free_port(), state_dir=state_dir)
    state_dir.mkdir(parents=True)
    broker.state_file.write_text(content)
    with pytest.raises(BrokerError, match="lacks pid/cmd"):
        broker.stop()


@pytest.mark.parametrize("engine", ENGINES)
def test_stale_state_file_never_kills_a_foreign_pid(engine: str, state_dir: Path, sleeper) -> None:
    broker = EmbeddedBroker(engine=engine, port=free_port(), state_dir=state_dir)
    binary = str(find_binary(engine))
    state_dir.mkdir(parents=True)
    # The recorded pid now belongs to `sleep`, as after a reboot or pid reuse.
    stale = {"pid": sleeper.pid, "engine": engine, "binary": binary, "cmd": [binary, "broker"]}
    broker.state_file.write_text(json.dumps(stale))

    assert broker.stop() is False
    assert sleeper.poll() is None, "stop() signalled a process that is not its broker"
    assert not broker.state_file.exists()

    broker.state_file.write_text(json.dumps(stale))
    current = broker.status()
    assert not current.running and current.pid is None
    assert not broker.state_file.exists()
    assert sleeper.poll() is None


@pytest.mark.parametrize("engine", ENGINES)
def test_port_taken_by_someone_else(engine: str, make_broker) -> None:
    broker = make_broker(engine)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", broker.port))
        squatter.listen()
        with pytest.raises(BrokerError, match="already in use"):
            broker.start()
    assert not broker.state_file.exists()


def test_cli_start_status_stop(state_dir: Path) -> None:
    runner = CliRunner()
    args = ["--port", str(free_port()), "--state-dir", str(state_dir)]
    try:
        result = runner.invoke(app, ["start", *args])
        assert result.exit_code == 0, result.output
        assert "tansu broker on 127.0.0.1:" in result.output
        result = runner.invoke(app, ["status", *args])
        assert result.exit_code == 0 and "running" in result.output
    finally:
        result = runner.invoke(app, ["stop", *args])
    assert result.exit_code == 0 and "stopped" in result.output
    result = runner.invoke(app, ["status", *args])
    assert result.exit_code == 1 and "no broker running" in result.output
    result = runner.invoke(app, ["start", "--data-dir", str(state_dir), *args])
    assert result.exit_code == 1 and "memory only" in result.output
