"""`slmstream broker start|stop|status`: a local Kafka-protocol broker for development."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.broker import BrokerError, BrokerStatus, EmbeddedBroker
from pipeline.cli.common import fail

app = typer.Typer(
    help="Run a local Kafka-protocol broker on 127.0.0.1 (tansu: in memory; noida: on disk).",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)  # status lines, whole whatever the terminal's width


class EngineChoice(StrEnum):
    tansu = "tansu"
    noida = "noida"


EngineOpt = Annotated[EngineChoice, typer.Option(help="Broker binary: tansu (memory) or noida (disk).")]
PortOpt = Annotated[int, typer.Option(help="Kafka port on 127.0.0.1.")]
DataDirOpt = Annotated[
    Path | None, typer.Option(help="noida only: where data lives [default: STATE_DIR/noida-data-PORT].")
]
StateDirOpt = Annotated[Path, typer.Option(help="Where the state file and broker log go.")]


def _broker(engine: EngineChoice, port: int, data_dir: Path | None, state_dir: Path) -> EmbeddedBroker:
    try:
        return EmbeddedBroker(engine=engine.value, port=port, data_dir=data_dir, state_dir=state_dir)
    except ValueError as exc:
        _fail(exc)


def _fail(exc: Exception) -> NoReturn:
    fail(str(exc), prefix="error")


def _describe(status: BrokerStatus) -> str:
    where = f"{status.engine} broker on {status.bootstrap} (pid {status.pid})"
    if status.data_dir is not None:
        where += f", data in {status.data_dir}"
    return where


@app.command()
def start(
    engine: EngineOpt = EngineChoice.tansu,
    port: PortOpt = 9092,
    data_dir: DataDirOpt = None,
    state_dir: StateDirOpt = Path(".run"),
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker to answer.")] = 30.0,
) -> None:
    """Start the broker in the background (does nothing if it already runs)."""
    broker = _broker(engine, port, data_dir, state_dir)
    try:
        status = broker.start(timeout=timeout)
    except BrokerError as exc:
        _fail(exc)
    console.print(f"[green]running[/green] {escape(_describe(status))}")


@app.command()
def stop(
    engine: EngineOpt = EngineChoice.tansu,
    port: PortOpt = 9092,
    data_dir: DataDirOpt = None,
    state_dir: StateDirOpt = Path(".run"),
) -> None:
    """Stop the broker started by `start` on this port (whatever its engine)."""
    broker = _broker(engine, port, data_dir, state_dir)
    try:
        before = broker.status()
        stopped = broker.stop()
    except BrokerError as exc:
        _fail(exc)
    if stopped:
        console.print(f"stopped {escape(_describe(before))}")
    else:
        console.print(f"no broker was running on {broker.host}:{port}")


@app.command()
def status(
    engine: EngineOpt = EngineChoice.tansu,
    port: PortOpt = 9092,
    data_dir: DataDirOpt = None,
    state_dir: StateDirOpt = Path(".run"),
) -> None:
    """Show whether the broker runs and answers. Exits 1 when it does not, for scripts."""
    broker = _broker(engine, port, data_dir, state_dir)
    try:
        current = broker.status()
    except BrokerError as exc:
        _fail(exc)
    if current.running:
        console.print(f"[green]running[/green] {escape(_describe(current))}")
        return
    if current.pid is not None:
        console.print(f"[yellow]not answering[/yellow] {escape(_describe(current))}; see {broker.log_file}")
    else:
        console.print(f"no broker running on {broker.host}:{port}")
    raise typer.Exit(1)
