"""`slmstream`: the command line around the worker.

broker   run a local Kafka-protocol broker          produce  send a JSONL file to a topic
tail     read a topic                              models   build and list the models
bench    measure the model and the pipeline         demo     the whole thing, end to end
"""

from __future__ import annotations

import typer

from pipeline.cli import bench, broker, demo, models, topics

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(broker.app, name="broker")
app.add_typer(models.app, name="models")
app.command("produce")(topics.produce)
app.command("tail")(topics.tail)
app.add_typer(bench.app, name="bench")
app.command("demo")(demo.demo)


def main() -> None:
    app()
