"""slmstream: Kafka events → validate → deadline-aware batches → small model → enriched topics.

Importing `pipeline` (or any module in it) reads no settings and starts nothing. `faust -A pipeline worker`
asks this package for `app`: the worker assembled by pipeline/worker.py from this process's settings, built on
first access and then kept.
"""

from typing import Any

_app: Any = None


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            from pipeline.worker import app_from_environment

            _app = app_from_environment()
        return _app
    raise AttributeError(name)
