"""`slmstream`: the command line around the worker (`faust -A pipeline worker` runs the worker itself)."""

from __future__ import annotations

import typer

from pipeline.cli import bench, broker, demo, dlq, model_server, models, topics

app = typer.Typer(
    help="slmstream: Kafka events classified by a small model. The worker itself: faust -A pipeline worker.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(broker.app, name="broker")
app.add_typer(models.app, name="models")
app.command("produce")(topics.produce)
app.command("tail")(topics.tail)
app.add_typer(bench.app, name="bench")
app.command("demo")(demo.demo)
app.add_typer(dlq.app, name="dlq")
app.command("model-server")(model_server.model_server)


def main() -> None:
    app()
