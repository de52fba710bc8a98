"""bench/cli.py: the commands' options and the scaffolding they share (no broker, no worker, no model)."""

from __future__ import annotations

import signal
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from bench import cli
from bench.cli import app
from pipeline.broker import BrokerError


def test_every_bench_command_is_in_one_app() -> None:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    assert names == {
        "classify",
        "compare",
        "identity",
        "hotpath",
        "summarize",
        "model-server",
        "gpu",
        "feedback",
        "languages",
    }


def test_classify_lists_its_options() -> None:
    result = CliRunner().invoke(app, ["classify", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--events", "--batch-size", "--engine", "--latency-seconds", "--out", "--data"):
        assert option in result.output


@pytest.mark.parametrize("command", ["classify", "compare", "identity", "summarize", "model-server", "languages"])
def test_an_unknown_engine_is_refused_before_anything_starts(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--engine", "kafka"])
    assert result.exit_code == 2
    assert "unknown engine 'kafka'" in result.output


def test_a_failure_inside_the_guard_is_recorded_and_what_started_is_stopped(tmp_path: Path) -> None:
    stopped: list[str] = []
    with cli.guarded(lambda: stopped.append("broker"), "the broker") as outcome:
        raise BrokerError("port taken")
    assert stopped == ["broker"]
    assert outcome.error == "bench failed: port taken"
    results: dict = {"bench": "x"}
    out = tmp_path / "r.json"
    with pytest.raises(typer.Exit) as exit_info:
        cli.finish_run(outcome, results, out, "broker")
    assert exit_info.value.exit_code == 1
    assert orjson.loads(out.read_bytes()) == {"bench": "x", "error": "bench failed: port taken"}


def test_sigterm_inside_the_guard_interrupts_and_the_handler_is_restored(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    stopped: list[bool] = []
    with cli.guarded(lambda: stopped.append(True), "the worker") as outcome:
        signal.raise_signal(signal.SIGTERM)
    assert outcome.error == "interrupted" and outcome.exit_code == 130
    assert stopped == [True]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_run_that_succeeds_writes_its_results_without_error(tmp_path: Path) -> None:
    with cli.guarded(lambda: None, "nothing") as outcome:
        pass
    cli.finish_run(outcome, {"ok": 1}, tmp_path / "r.json", "nothing")
    assert orjson.loads((tmp_path / "r.json").read_bytes()) == {"ok": 1}


def test_a_missing_extra_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "package_version", lambda name: None)
    result = CliRunner().invoke(app, ["compare", "--systems", "quix"], terminal_width=200)
    assert result.exit_code == 2
    assert "quixstreams is not installed" in result.output
    assert "pip install 'slmstream[bench]'" in result.output


def test_identity_refuses_an_unknown_system_before_anything_starts() -> None:
    result = CliRunner().invoke(app, ["identity", "--systems", "aiokafka,kafka-streams"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())  # however the console wrapped it
    assert "--systems 'aiokafka,kafka-streams'" in text and "aiokafka, quix, naive, identity" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "online"], "--mode 'online'"),
        (["--dataset", "news"], "--dataset 'news'"),
        (["--steps", "a,b"], "--steps 'a,b'"),
        (["--steps", "0"], "--steps '0'"),
    ],
)
def test_feedback_refuses_bad_options_before_anything_starts(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["feedback", *args], terminal_width=200)
    assert result.exit_code == 2
    assert message in result.output
