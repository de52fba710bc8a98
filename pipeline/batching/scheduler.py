"""The loop between the batcher and the model: forms batches, applies the late policy, runs the model off
the event loop, and hands each batch's results to the outbox, which acks each input only after the broker has
its result (pipeline/output/outbox.py states the ack guarantees).

    reader ─submit_batch()→ DeadlineBatcher ─batch→ ModelWorker (thread) ─results→ Outbox ─broker ack→ inputs done

Two ways in: `submit_batch` (pipeline/ingest/reader.py: a whole fetch at once, no per-event task, future or
metric; each input reported done by its position through `inputs_done`, once per delivered batch) and the
per-event `submit`/`submit_deferred`/`reject` (an ack callable per event; tests and callers without a reader).

Two lanes: `main` (events from `events`, with deadlines) and `deferred` (events from `events.deferred`,
no deadline). A deferred batch runs only when it fits in the model's idle time before the next main batch
is due, so deferred work never delays on-time work.

Languages: with a RoutedClassifier (pipeline/model/router.py) a batch is split on the model thread into one
sub-batch per encoder (by each event's language), run one after the other; the results come back in the
batch's order and are delivered and acked as one batch, so per-partition order and the commit order below are
the same as with one encoder. The deadline batcher estimates a batch from each encoder's own service time and
its recent share of the events (`RoutedServiceTime`).

Memory is bounded: `submit` waits while `queue_limit` events are held (waiting or in flight), and the reader
fetches at most `room()` records, so it stops pulling from Kafka — back-pressure instead of an unbounded queue.
The deferred lane holds at most `4 x max_batch` (`deferred_room()`). An event stops being held once every
result of its batch (enriched, DLQ or deferred record) is stored and its input acked.

Shutdown: `drain()` batches whatever waits at once (no max_wait, no waiting for a deadline), runs it through
the model and the outbox, and returns when the broker holds every result and every input is acked. An event
not yet submitted is not acked, so it is read again by whoever gets its partition next.

Observers (the dashboard, the metrics; pipeline/output/observers.py) hear once per model batch, once per
delivered batch, and whenever the number of held events changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from pipeline.batching.batcher import DeadlineBatcher, Pending
from pipeline.batching.service_time import RoutedServiceTime
from pipeline.config import Settings
from pipeline.facts.join import FactsJoin
from pipeline.model.router import RoutedResults
from pipeline.model.worker import ModelWorker
from pipeline.output.observers import Delivered, ModelBatch, Observer, Outcome
from pipeline.output.outbox import AckFn, Outbox, Outgoing, Sleep
from pipeline.output.records import Classification, deferred_headers, dlq_record, enriched_records
from pipeline.output.sink import Sink
from schemas import Event, Origin

log = structlog.get_logger(__name__)

MODEL_ATTEMPTS = 3  # a batch whose model call fails this often goes to the DLQ
Lane = Literal["main", "deferred"]
Position = tuple[Any, int]  # (topic-partition, offset) of an input record, as the reader tracks it
InputsDone = Callable[[Sequence[Position]], None]


@dataclass(slots=True)
class Work:
    event: Event
    raw: bytes  # the message value as received: what the DLQ and events.deferred carry
    ack: AckFn | None = None  # per-event path: called once the result is stored
    position: Position | None = None  # batch path: reported to `inputs_done` once the result is stored


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that failed validation (batch path): its DLQ record is sent, then its position is done."""

    error_type: str
    message: str
    origin: Origin
    raw: bytes | None
    position: Position


class BatchScheduler:
    def __init__(
        self,
        settings: Settings,
        primary: ModelWorker,
        fallback: ModelWorker | None,
        sink: Sink,
        *,
        observers: Sequence[Observer] = (),
        inputs_done: InputsDone | None = None,
        facts: FactsJoin | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        b = settings.batching
        if b.late_policy == "degrade" and fallback is None:
            raise ValueError("late_policy=degrade needs a fallback model")
        self.settings = settings
        self.taxonomy = settings.taxonomy  # a hash of the labels: computed once, not per record
        self.policy = b.late_policy
        self.budget_s = b.budget_ms / 1000.0
        self.primary, self.fallback = primary, fallback
        self.observers = tuple(observers)
        self.inputs_done = inputs_done  # the reader's offset bookkeeping (batch path)
        self.facts = facts  # the reference facts join (pipeline/facts), when facts.enabled
        self.clock = clock
        self.outbox = Outbox(sink, on_failure=lambda _: self._wake.set(), sleep=sleep)
        self.service_time = RoutedServiceTime()
        self.main: DeadlineBatcher[Work] = DeadlineBatcher(
            b.max_batch, b.max_wait_ms / 1000.0, self.service_time, b.delivery_margin_ms / 1000.0
        )
        self.deferred: deque[Work] = deque()
        self.queue_limit = b.queue_limit
        self.deferred_limit = b.max_batch * 4
        self._main_held = 0  # main-lane events and rejects held: at most queue_limit
        self._deferred_held = 0
        self._room_freed = asyncio.Event()
        self._wake = asyncio.Event()
        self._batch_lock = asyncio.Lock()  # one batch at a time, whether run() or drain() takes it
        self._held = 0

    # ---- intake: a fetch at a time (the reader) ---------------------------------------------------------
    def room(self) -> int:
        """How many more main-lane events (or rejects) may be handed in now."""
        return max(self.queue_limit - self._main_held, 0)

    def deferred_room(self) -> int:
        return max(self.deferred_limit - self._deferred_held, 0)

    async def wait_for_room(self) -> None:
        """Return once `room()` is positive (some held event was delivered)."""
        while self._main_held >= self.queue_limit:
            self._room_freed.clear()
            await self._room_freed.wait()

    async def submit_batch(
        self, works: Sequence[Work], deferred: Sequence[Work] = (), rejects: Sequence[Rejected] = ()
    ) -> None:
        """Queue a fetch's events (main lane), deferred events and rejects at once. Never waits for room: the
        caller hands in at most `room()` events and rejects, and deferred ones while `deferred_room()` is
        positive. Returns once the rejects' DLQ records are handed to the producer."""
        now = self.clock()
        budget = self.budget_s
        add = self.main.add
        for w in works:
            ev = w.event
            ev.arrived = now
            ev.deadline = deadline = ev.ts_ms / 1000.0 + budget
            add(w, deadline, now)
        for w in deferred:
            ev = w.event
            ev.arrived = now
            ev.deadline = math.inf
            ev.deferred = True
        self.deferred.extend(deferred)
        self._main_held += len(works) + len(rejects)
        self._deferred_held += len(deferred)
        self._hold(len(works) + len(deferred) + len(rejects))
        self._wake.set()
        if rejects:
            dlq = self.settings.topics.dlq
            outs = [Outgoing(dlq, r.origin.key, dlq_record(r.error_type, r.message, r.origin, r.raw)) for r in rejects]
            reasons = [r.error_type for r in rejects]
            done = self._delivered(
                "dlq", [None] * len(rejects), reasons=reasons, positions=[r.position for r in rejects]
            )
            await self.outbox.send_batch(outs, then=done)

    # ---- intake: one event at a time ----------------------------------------------------------------------
    async def submit(self, work: Work) -> None:
        """Queue an event for the main lane; waits while the worker holds `queue_limit` events."""
        await self.wait_for_room()
        self._main_held += 1
        self._hold(+1)
        now = self.clock()
        work.event.arrived = now
        work.event.deadline = work.event.ts_ms / 1000.0 + self.budget_s
        self.main.add(work, work.event.deadline, now)
        self._wake.set()

    async def submit_deferred(self, work: Work) -> None:
        while self._deferred_held >= self.deferred_limit:
            self._room_freed.clear()
            await self._room_freed.wait()
        self._deferred_held += 1
        self._hold(+1)
        work.event.arrived = self.clock()
        work.event.deadline = math.inf
        work.event.deferred = True
        self.deferred.append(work)
        self._wake.set()

    async def reject(self, error_type: str, message: str, origin: Origin, raw: bytes | None, ack: AckFn) -> None:
        """Send a message that failed validation to the DLQ; ack it once the broker has the DLQ record."""
        await self.wait_for_room()
        self._main_held += 1
        self._hold(+1)
        out = Outgoing(self.settings.topics.dlq, origin.key, dlq_record(error_type, message, origin, raw))
        await self.outbox.send_batch([out], [ack], then=self._delivered("dlq", [None], reasons=[error_type]))

    @property
    def held(self) -> int:
        """Events (and rejects) held: waiting, in the model or awaiting the broker."""
        return self._held

    def _hold(self, n: int) -> None:
        self._held += n
        for o in self.observers:
            o.on_held("classify", self._held)

    # ---- the loop ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Batch and classify until cancelled; raises the outbox's failure (a record that can never be sent)."""
        while True:
            await self._wait_for_batch()
            async with self._batch_lock:
                taken = self._take(self.clock(), now_or_never=False)
                if taken is not None:
                    await self._run_batch(*taken)

    async def drain(self) -> None:
        """Finish everything submitted: batch what waits at once, classify it, and wait until the broker holds
        every result and every input is acked (graceful shutdown; tests). Safe while run() runs."""
        while True:
            async with self._batch_lock:
                taken = self._take(self.clock(), now_or_never=True)
                if taken is None:
                    break
                await self._run_batch(*taken)
        await self.outbox.drain()

    async def _wait_for_batch(self) -> None:
        while True:
            self.outbox.raise_if_failed()
            now = self.clock()
            if self.main.ready(now) or (self.deferred and self._deferred_batch_size(now)):
                return
            due = self.main.due_at()
            self._wake.clear()
            timeout = None if due is None else max(due - now, 0.0005)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _take(self, now: float, *, now_or_never: bool) -> tuple[Lane, list[Pending[Work]], list[Pending[Work]]] | None:
        """The next batch due (main first); with `now_or_never`, the next batch whether due or not."""
        if self.main.ready(now) or (now_or_never and len(self.main)):
            batch = self.main.take(now)
            return "main", batch.on_time, batch.late
        if self.deferred:
            n = min(len(self.deferred), self.main.max_batch) if now_or_never else self._deferred_batch_size(now)
            if n:
                taken = [self.deferred.popleft() for _ in range(n)]
                return "deferred", [Pending(w, math.inf, w.event.arrived) for w in taken], []
        return None

    def _deferred_batch_size(self, now: float) -> int:
        """The largest deferred batch that finishes before the next main batch is due (0: none fits)."""
        n = min(len(self.deferred), self.main.max_batch)
        due = self.main.due_at()
        if due is None:
            return n
        slack = due - now
        while n and self.service_time.estimate(n) > slack:
            n //= 2
        return n

    async def _run_batch(self, lane: Lane, items: list[Pending[Work]], late: list[Pending[Work]]) -> None:
        start = self.clock()
        if late and self.policy == "process":
            items, late = items + late, []
        if late and self.policy == "defer":
            await self._defer(late)
            late = []
        if items:
            await self._classify_and_deliver(items, self.primary, start, lane=lane, degraded=False)
        if late:  # policy == degrade
            assert self.fallback is not None
            await self._classify_and_deliver(late, self.fallback, self.clock(), lane=lane, degraded=True)

    async def _classify_and_deliver(
        self, items: list[Pending[Work]], worker: ModelWorker, start: float, *, lane: Lane, degraded: bool
    ) -> None:
        texts = [p.item.event.text for p in items]
        model_name = worker.classifier.info.name
        results: list[Classification] | None = None
        model_s = 0.0
        error: Exception | None = None
        for attempt in range(1, MODEL_ATTEMPTS + 1):
            try:
                results, model_s = await worker.classify(texts)
                break
            except Exception as exc:  # any failure inside inference: retry, then DLQ
                error = exc
                log.warning("model_call_failed", model=model_name, attempt=attempt, error=repr(exc), batch=len(items))
        if results is None:
            await self._dead_letter(items, f"model {model_name} failed {MODEL_ATTEMPTS} times: {error!r}")
            return

        if not degraded and lane == "main":
            self.observe_service(results, model_s)
        done = self.clock()
        topic = self.settings.topics.enriched
        # What each record needs, a comprehension per column (cheaper than appends in one loop); the records
        # are then built in one call.
        events: list[Event] = [p.item.event for p in items]
        mets = [done <= ev.deadline for ev in events]
        queue_ms = [(start - ev.arrived) * 1000.0 for ev in events]
        waits = [max(start - ev.arrived, 0.0) for ev in events]
        total_ms = [(done - ev.ts_ms / 1000.0) * 1000.0 for ev in events]
        misses = mets.count(False)
        records = enriched_records(
            events,
            results,
            worker.classifier.info,
            self.taxonomy,
            deadline_met=mets,
            degraded=degraded,
            queue_ms=queue_ms,
            model_ms=model_s * 1000.0,
            total_ms=total_ms,
            facts=self.facts.facts_of(events) if self.facts is not None else None,
        )
        outs = [Outgoing(topic, ev.id.encode(), record) for ev, record in zip(events, records, strict=True)]
        parts = results.parts if isinstance(results, RoutedResults) else {}
        stats = ModelBatch(model_name, len(items), model_s, waits, misses, self.policy, parts)
        for o in self.observers:
            o.on_model_batch(stats)
        labels = [r.label for r in results]
        langs = [r.lang or "" for r in results] if results and results[0].lang is not None else ()
        acks, positions = _acks_and_positions(items)
        await self.outbox.send_batch(
            outs, acks, then=self._delivered("enriched", events, labels=labels, langs=langs, positions=positions)
        )
        log.info(
            "batch",
            lane=lane,
            model=model_name,
            size=len(items),
            model_ms=round(model_s * 1000, 1),
            queue_ms=round(max(queue_ms), 1),  # (start - the earliest arrival) in ms, without another pass
            late=misses,
            degraded=degraded,
            held=self._held,
            encoders={k: n for k, (n, _) in parts.items()} or None,
        )

    def observe_service(self, results: Sequence[Classification], seconds: float) -> None:
        """Teach the deadline batcher how long a batch took: per encoder when the router split it."""
        if isinstance(results, RoutedResults):
            self.service_time.observe_parts(results.parts)
        else:
            self.service_time.observe(len(results), seconds)

    async def _defer(self, late: list[Pending[Work]]) -> None:
        outs = []
        for p in late:
            origin = p.item.event.origin
            outs.append(Outgoing(self.settings.topics.deferred, origin.key, p.item.raw, deferred_headers(origin)))
        events = [p.item.event for p in late]
        acks, positions = _acks_and_positions(late)
        await self.outbox.send_batch(outs, acks, then=self._delivered("deferred", events, positions=positions))
        log.info("deferred", size=len(late))

    async def _dead_letter(self, items: list[Pending[Work]], reason: str) -> None:
        outs = []
        for p in items:
            origin = p.item.event.origin
            outs.append(
                Outgoing(self.settings.topics.dlq, origin.key, dlq_record("model_error", reason, origin, p.item.raw))
            )
        events = [p.item.event for p in items]
        acks, positions = _acks_and_positions(items)
        await self.outbox.send_batch(
            outs,
            acks,
            then=self._delivered("dlq", events, reasons=["model_error"] * len(items), positions=positions),
        )
        log.error("batch_to_dlq", size=len(items), reason=reason)

    # ---- after the broker ---------------------------------------------------------------------------------
    def _delivered(
        self,
        outcome: Outcome,
        events: Sequence[Event | None],
        *,
        labels: Sequence[str] = (),
        langs: Sequence[str] = (),
        reasons: Sequence[str] = (),
        positions: Sequence[Position] = (),
    ) -> Callable[[], None]:
        """What runs once a batch is stored and its inputs acked: report the batch path's inputs done, free
        their room, tell the observers. `events` has None for a rejected message (it was never an Event)."""

        def done() -> None:
            now = self.clock()
            if positions and self.inputs_done is not None:
                self.inputs_done(positions)
            deferred = sum(1 for e in events if e is not None and e.deferred)
            self._deferred_held -= deferred
            self._main_held -= len(events) - deferred
            self._room_freed.set()
            self._hold(-len(events))
            latencies: list[float] = []
            enriched: Sequence[Event] = ()
            if outcome == "enriched":
                latencies = [max(now - e.ts_ms / 1000.0, 0.0) for e in events if e is not None]
                enriched = events  # type: ignore[assignment]  # an enriched batch has no None
            batch = Delivered(
                outcome,
                len(events),
                now,
                labels=labels,
                langs=langs,
                latencies_s=latencies,
                reasons=reasons,
                events=enriched,
            )
            for o in self.observers:
                o.on_delivered(batch)

        return done


def _noop() -> None:
    pass


def _acks_and_positions(items: Sequence[Pending[Work]]) -> tuple[list[AckFn], list[Position]]:
    """The per-event acks (for the outbox, aligned with the records; none on the batch path) and the batch
    path's positions of `items`."""
    acks: list[AckFn] = []
    positions: list[Position] = []
    for p in items:
        w = p.item
        if w.position is not None:
            positions.append(w.position)
        if w.ack is not None:
            acks.append(w.ack)
    if acks and len(acks) != len(items):  # both kinds in one batch: keep acks[i] aligned with records[i]
        acks = [p.item.ack or _noop for p in items]
    return acks, positions
