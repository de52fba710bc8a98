"""`slmstream facts`: a bad file is refused before any connection, naming its lines (sending: tests/e2e)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def test_commands_are_registered(cli_options) -> None:
    assert {"--broker"} <= cli_options("facts", "load")
    assert {"--broker"} <= cli_options("facts", "delete")


def test_a_bad_file_is_refused_whole_and_names_each_bad_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLMSTREAM_BROKER", "kafka://127.0.0.1:9")  # nothing listens: a connection would fail
    f = tmp_path / "facts.jsonl"
    f.write_text('{"id": "c1", "facts": {"plan": "Business"}}\n[1]\n{"id": "c2", "facts": "Free"}\n')
    result = runner.invoke(app, ["facts", "load", str(f)])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "2 bad line(s), nothing sent" in out
    assert "facts.jsonl:2: not a JSON object" in out and "facts.jsonl:3: `facts` must be a JSON object" in out


def test_an_empty_id_cannot_be_deleted() -> None:
    assert runner.invoke(app, ["facts", "delete", ""]).exit_code == 2
