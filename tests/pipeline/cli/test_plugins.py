"""pipeline/cli/__init__.py: command groups found through the `slmstream.commands` entry point group, added when
`slmstream` runs; a plugin whose extra is missing becomes a command that says what to install."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import add_plugins

GROUP = "slmstream.test_commands"  # not the real group: the installed slmstream's own entry points stay out


def fake_distribution(root: Path, name: str, entry: str, requires: list[str]) -> None:
    """An installed distribution as importlib.metadata finds it on sys.path: a .dist-info folder."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0", *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{entry}\n")


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "fakeplugin.py").write_text(
        "import typer\napp = typer.Typer()\n\n"
        "@app.command()\ndef hello() -> None:\n    print('hello from the plugin')\n\n"
        "@app.command()\ndef other() -> None:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("fakeplugin", None)


def test_a_declared_plugin_is_added_and_runs(plugin_module: Path) -> None:
    fake_distribution(plugin_module, "fakedist", "extra-cmds = fakeplugin:app", [])
    app = typer.Typer()
    add_plugins(app, GROUP)
    add_plugins(app, GROUP)  # idempotent: main() may run twice in one process (tests)
    assert [g.name for g in app.registered_groups] == ["extra-cmds"]
    result = CliRunner().invoke(app, ["extra-cmds", "hello"])
    assert result.exit_code == 0, result.output
    assert "hello from the plugin" in result.output


def test_a_plugin_whose_extra_is_missing_says_what_to_install(plugin_module: Path) -> None:
    requires = ["surely-not-installed-pkg>=1; extra == 'bench'", "typer; extra == 'other'"]
    fake_distribution(plugin_module, "fakedist", "extra-cmds = fakeplugin:app [bench]", requires)
    app = typer.Typer()
    add_plugins(app, GROUP)
    result = CliRunner().invoke(app, ["extra-cmds", "hello", "--rate", "5"], terminal_width=200)
    assert result.exit_code == 2
    assert "surely-not-installed-pkg" in result.output
    assert "pip install 'fakedist[bench]'" in result.output
    assert "fakeplugin" not in sys.modules  # never imported


def test_a_plugin_that_fails_to_load_leaves_the_other_commands(plugin_module: Path) -> None:
    fake_distribution(plugin_module, "fakedist", "broken = fakeplugin:no_such_app", [])
    app = typer.Typer()

    @app.command()
    def kept() -> None:
        print("still here")

    @app.command()
    def also_kept() -> None:  # two commands: a group, as slmstream's app is
        pass

    add_plugins(app, GROUP)
    assert not app.registered_groups
    result = CliRunner().invoke(app, ["kept"])
    assert result.exit_code == 0 and "still here" in result.output


def test_the_product_never_imports_the_bench() -> None:
    """pipeline/, agents/, schemas/ name no bench module: the CLI finds plugins by entry point, in main()."""
    repo = Path(__file__).resolve().parents[3]
    for path in sorted(p for d in ("pipeline", "agents", "schemas") for p in (repo / d).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in imported if m == "bench" or m.startswith("bench.")}, path


def test_the_bench_entry_point_is_declared() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["slmstream.commands"] == {"bench": "bench.cli:app [bench]"}
