"""`slmstream`: the command line around the worker (`faust -A pipeline worker` runs the worker itself).

Command groups outside the `pipeline` package (the bench harness) are plugins: an installed distribution
declares them in the `slmstream.commands` entry point group (`name = "module:typer_app [extra]"`), and
`main()` adds them when it runs, never at import. A plugin whose extra is not installed shows up as a command
that says what to install; one that fails to load is reported and left out.
"""

from __future__ import annotations

import re
from importlib import metadata

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.cli import broker, demo, dlq, facts, label, model_server, models, topics

PLUGIN_GROUP = "slmstream.commands"

app = typer.Typer(
    help="slmstream: Kafka events classified by a small model. The worker itself: faust -A pipeline worker.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(broker.app, name="broker")
app.add_typer(models.app, name="models")
app.command("produce")(topics.produce)
app.command("tail")(topics.tail)
app.command("demo")(demo.demo)
app.add_typer(dlq.app, name="dlq")
app.add_typer(facts.app, name="facts")
app.command("model-server")(model_server.model_server)
app.command("label")(label.label)


def missing_requirements(dist: metadata.Distribution | None, extras: list[str]) -> list[str]:
    """The distributions an entry point's extras require that are not installed (names only)."""
    if dist is None or not extras:
        return []
    missing = []
    for req in dist.requires or []:
        name, _, marker = req.partition(";")
        if not any(re.search(rf"extra\s*==\s*['\"]{re.escape(e)}['\"]", marker) for e in extras):
            continue
        project = re.split(r"[\s\[<>=!~;(]", name.strip(), maxsplit=1)[0]
        try:
            metadata.version(project)
        except metadata.PackageNotFoundError:
            missing.append(project)
    return missing


def _add_install_hint(target: typer.Typer, name: str, dist: str, extras: list[str], missing: list[str]) -> None:
    """`slmstream NAME ...` (any arguments) says what to install and exits 2."""
    install = f"pip install '{dist}[{','.join(extras)}]'"

    def needs_extra(ctx: typer.Context) -> None:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]slmstream {name}[/] needs {', '.join(missing)}: {escape(install)}"
        )
        raise typer.Exit(2)

    settings = {"allow_extra_args": True, "ignore_unknown_options": True}
    target.command(name, help=f"Not installed: {install}", context_settings=settings)(needs_extra)


def add_plugins(target: typer.Typer, group: str = PLUGIN_GROUP) -> None:
    """Add every command group declared under `group` by an installed distribution (once)."""
    taken = {g.name for g in target.registered_groups} | {c.name for c in target.registered_commands}
    for ep in metadata.entry_points(group=group):
        if ep.name in taken:
            continue
        extras = list(ep.extras)
        missing = missing_requirements(ep.dist, extras)
        if missing:
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "slmstream"
            _add_install_hint(target, ep.name, dist, extras, missing)
            taken.add(ep.name)
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take the other commands down
            Console(stderr=True, soft_wrap=True).print(f"[yellow]slmstream: command {ep.name!r} not loaded:[/] {exc}")
            continue
        target.add_typer(plugin, name=ep.name)
        taken.add(ep.name)  # the same plugin seen twice on sys.path (an editable and a regular install): once


def main() -> None:
    add_plugins(app)
    app()
