"""The one place a worker is assembled: settings → app, topics, runtime, agents, web pages, timers.

`build_worker(settings)` returns the Faust app ready for `faust worker`; `pipeline.app` (what
`faust -A pipeline worker` asks for) is `app_from_environment()`, built on first access. Importing this module
reads no settings and creates nothing.

A wrong setting, or a model that is not there, stops the worker here, before it touches Kafka, with a message
naming the setting or the command that builds the model (`slmstream: ...`, exit status 2).
"""

from __future__ import annotations

import sys
from typing import Any

from agents import analyze, classify
from pipeline import metrics
from pipeline.config import ConfigError, Settings, load_settings
from pipeline.dashboard.live import LiveState
from pipeline.facts.reader import FactsReader
from pipeline.faust_app import SlmApp, create_app, worker_topics
from pipeline.ingest.offsets import AckedOffsets
from pipeline.learning.cache import RecentEvents
from pipeline.learning.service import LearningService
from pipeline.model.base import ModelError
from pipeline.runtime import Runtime, preflight
from pipeline.web import register_pages

LAG_INTERVAL_S = 5.0


def build_worker(settings: Settings) -> SlmApp:
    """The worker's app for validated `settings` (ModelError: a model it needs is missing or broken)."""
    preflight(settings)  # before the app exists: nothing is logged or connected for a worker that cannot start
    app = create_app(settings)
    topics = worker_topics(app)
    live = LiveState()  # the dashboard's state: fed by the loops as an observer, read by /api/live
    offsets: AckedOffsets[Any] = AckedOffsets()  # the classify path's input offsets: done → committed
    # The recent events (id -> text) feedback by id is resolved from: filled per delivered batch, an observer.
    recent = RecentEvents(settings.learning.recent_events, settings.learning.recent_chars)
    observers = (metrics.MetricsObserver(), live, *((recent,) if settings.learning.enabled else ()))
    facts = FactsReader(settings) if settings.facts.enabled else None  # every worker reads the whole table
    if facts is not None:
        app.service(facts)  # type: ignore[arg-type]  # an instance, as the runtime below
    runtime = app.runtime = Runtime(app, topics, observers=observers, inputs_done=offsets.done, facts=facts)
    # Started with the app, stopped (drained) before its consumer: see pipeline/runtime.py. An instance, not a
    # class: Faust starts either (App._prepare_subservice), its annotation names only the class.
    app.service(runtime)  # type: ignore[arg-type]
    learning = None
    if settings.learning.enabled:  # begun by the runtime once the classifier is loaded; stopped before it
        learning = runtime.learning = LearningService(settings, app, recent)
        app.service(learning)  # type: ignore[arg-type]
    reader = classify.register(app, runtime, offsets)  # added after the runtime: stopped (drained) before it
    if runtime.analytics_on:
        analyze.register(app, runtime, topics)
    register_pages(app, runtime.is_ready, live, learning)
    app.timer(LAG_INTERVAL_S)(runtime.record_lag)
    app.timer(LAG_INTERVAL_S)(reader.record_lag)
    return app


def app_from_environment() -> SlmApp:
    """`build_worker` for the settings of this process (SLMSTREAM_CONFIG, SLMSTREAM_* env vars); on a bad
    setting or a missing model: print why and exit with status 2."""
    try:
        return build_worker(load_settings())
    except ConfigError as exc:
        print(f"slmstream: {exc}", file=sys.stderr)
    except ModelError as exc:
        print(f"slmstream: cannot start: {exc}", file=sys.stderr)
    raise SystemExit(2)
