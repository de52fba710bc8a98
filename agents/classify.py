"""The classification path: `events` and `events.deferred` → validated → batched → classified →
`events.enriched` (bad input → `events.dlq`, late events → `events.deferred` under the `defer` policy).

Not a Faust agent: a per-event stream costs ~200 µs of CPU per event in Faust's Stream/Event/ack machinery.
The path reads a fetch at a time with its own consumer (pipeline/ingest/reader.py states its guarantees:
at-least-once, commit after the broker's acks, commit before revoke, back-pressure, drain on stop) and hands
each fetch to the scheduler (pipeline/batching/scheduler.py) as one batch.
"""

from __future__ import annotations

from typing import Any

from pipeline.faust_app import SlmApp
from pipeline.ingest.offsets import AckedOffsets
from pipeline.ingest.reader import EventReader
from pipeline.runtime import Runtime


def register(app: SlmApp, runtime: Runtime, offsets: AckedOffsets[Any]) -> EventReader:
    """Add the classify path's reader to the app (started with it, stopped before the runtime drains)."""
    reader = EventReader(app.settings, runtime, offsets)
    app.service(reader)  # type: ignore[arg-type]  # an instance: see pipeline/worker.py
    return reader
