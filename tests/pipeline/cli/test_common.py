"""pipeline/cli/common.py: errors are printed whole, whatever the terminal's width and the paths' length."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import app, common

NARROW = 30  # columns: far less than any message below


@pytest.fixture
def narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.err, "width", NARROW)


def test_a_long_error_is_one_line_on_a_narrow_terminal(narrow_terminal: None, capsys) -> None:
    message = "cannot open /" + "/".join(["a-rather-long-folder-name"] * 8) + "/m.sock: writable by group or others"
    common.print_error(message)
    assert capsys.readouterr().err == f"slmstream: {message}\n"


def test_markup_in_a_message_is_printed_as_written(capsys) -> None:
    common.print_error("a [bold]literal[/] tag and [red]", prefix="x [y]")
    assert capsys.readouterr().err == "x [y]: a [bold]literal[/] tag and [red]\n"


def test_fail_exits_with_the_code() -> None:
    with pytest.raises(typer.Exit) as info:
        common.fail("no", 3)
    assert info.value.exit_code == 3


def test_a_command_error_with_a_long_path_is_not_wrapped(narrow_terminal: None, socket_dir: Path) -> None:
    sock = socket_dir / ("d" * 150) / "m.sock"  # over the 107-byte limit of a socket path
    result = CliRunner().invoke(app, ["model-server", "--socket", str(sock), "--model", "identity"])
    assert result.exit_code == 1
    line = next(ln for ln in result.output.splitlines() if "cannot start the model server" in ln)
    assert str(sock) in line and "the limit is 107" in line
