"""slmstream: Kafka events → validate → deadline-aware batches → small model → enriched topics.

`faust -A pipeline worker` asks this package for `app`; importing it lazily keeps `import pipeline`
(the CLI, the tests) free of the app's side effects: settings validation and Kafka topic objects.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        import agents  # noqa: F401  (registers the agents)
        from pipeline.faust_app import app

        return app
    raise AttributeError(name)
