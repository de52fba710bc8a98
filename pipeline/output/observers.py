"""What the loops tell the outside world: observers passed into the scheduler and the window analytics.

The dashboard's live state (pipeline/dashboard/live.py) and the Prometheus metrics (pipeline/metrics.py) are
observers; the worker's assembly creates them and hands them to the loops (`observers=[...]`), so nothing
reaches a module-level global. Each hook is called once per batch, never once per event, on the event loop,
and must return quickly (no I/O): a slow observer slows the loop that calls it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from schemas import Event

Outcome = Literal["enriched", "dlq", "deferred", "summary", "alert", "stats"]


@dataclass(frozen=True, slots=True)
class Delivered:
    """One batch of records the broker holds, whose inputs have been acked."""

    outcome: Outcome
    size: int
    now: float  # the loop's clock (epoch seconds) when the inputs were acked
    labels: Sequence[str] = ()  # enriched: each record's label
    langs: Sequence[str] = ()  # enriched: each record's language, when language ID ran
    latencies_s: Sequence[float] = ()  # enriched: event time → acked; summary: window close → acked
    reasons: Sequence[str] = ()  # dlq: each record's error type
    records: Sequence[Mapping[str, Any]] = field(default_factory=tuple)  # summary/alert/stats: as sent
    events: Sequence[Event] = ()  # enriched: the events, aligned with `labels` (the recent-events cache reads them)


@dataclass(frozen=True, slots=True)
class ModelBatch:
    """One model call of the scheduler that returned results."""

    model: str
    size: int
    model_s: float
    queue_waits_s: Sequence[float]  # each event: arrival at the worker → start of its batch
    deadline_misses: int
    late_policy: str
    # Routed by language (pipeline/model/router.py): encoder name → (events, seconds) of its sub-batch.
    parts: Mapping[str, tuple[int, float]] = field(default_factory=dict)


class Observer(Protocol):
    def on_delivered(self, batch: Delivered) -> None: ...
    def on_model_batch(self, batch: ModelBatch) -> None: ...
    def on_held(self, loop: Literal["classify", "analytics"], held: int) -> None: ...


class BaseObserver:
    """An observer that ignores everything: subclass it and override the hooks you need."""

    def on_delivered(self, batch: Delivered) -> None:
        pass

    def on_model_batch(self, batch: ModelBatch) -> None:
        pass

    def on_held(self, loop: Literal["classify", "analytics"], held: int) -> None:
        pass
