"""The loop between the batcher and the model: forms batches, applies the late policy, runs the model off
the event loop, hands results to the sink and acks each input only after the broker has its result.

    agent ─submit()→ DeadlineBatcher ─batch→ ModelWorker (thread) ─results→ Sink ─broker ack→ ack input

Two lanes: `main` (events from `events`, with deadlines) and `deferred` (events from `events.deferred`,
no deadline). A deferred batch runs only when it fits in the model's idle time before the next main batch
is due, so deferred work never delays on-time work.

Memory is bounded: `submit` waits while `queue_limit` events are held (waiting or in flight), which stops
the agent pulling from Kafka — back-pressure instead of an unbounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from pipeline import metrics
from pipeline.batching.batcher import DeadlineBatcher, Pending
from pipeline.batching.service_time import ServiceTime
from pipeline.config import Settings
from pipeline.dashboard.live import LIVE
from pipeline.model.worker import ModelWorker
from pipeline.output.records import Classification, deferred_headers, dlq_record, enriched_record
from schemas import Event, Origin

log = structlog.get_logger(__name__)

AckFn = Callable[[], Awaitable[Any] | Any]
MODEL_ATTEMPTS = 3  # a batch whose model call fails this often goes to the DLQ
SEND_RETRY_MAX_S = 5.0


class Sink(Protocol):
    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes | None]] | None = None
    ) -> Awaitable[Any]:
        """Hand a record to the producer; the returned awaitable resolves once the broker has it."""
        ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes | None]] | None = None
    label: str | None = None  # an enriched record's label, for the live dashboard once the broker has it


# (event or None for a rejected message, its ack, the record, the broker's future for it)
Send = tuple[Event | None, AckFn, Outgoing, Awaitable[Any]]


@dataclass(slots=True)
class Work:
    event: Event
    raw: bytes  # the message value as received: what the DLQ and events.deferred carry
    ack: AckFn


async def _call(fn: AckFn) -> None:
    result = fn()
    if inspect.isawaitable(result):
        await result


class BatchScheduler:
    def __init__(
        self,
        settings: Settings,
        primary: ModelWorker,
        fallback: ModelWorker | None,
        sink: Sink,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        b = settings.batching
        if b.late_policy == "degrade" and fallback is None:
            raise ValueError("late_policy=degrade needs a fallback model")
        self.settings = settings
        self.taxonomy = settings.taxonomy  # a hash of the labels: computed once, not per record
        self.policy = b.late_policy
        self.budget_s = b.budget_ms / 1000.0
        self.primary, self.fallback, self.sink = primary, fallback, sink
        self.clock = clock
        self.service_time = ServiceTime()
        self.main: DeadlineBatcher[Work] = DeadlineBatcher(
            b.max_batch, b.max_wait_ms / 1000.0, self.service_time, b.delivery_margin_ms / 1000.0
        )
        self.deferred: deque[Work] = deque()
        self._room = asyncio.Semaphore(b.queue_limit)
        self._deferred_room = asyncio.Semaphore(b.max_batch * 4)
        self._wake = asyncio.Event()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._held = 0

    # ---- intake -----------------------------------------------------------------------------------------
    async def submit(self, work: Work) -> None:
        """Queue an event for the main lane; waits while the worker holds `queue_limit` events."""
        await self._room.acquire()
        self._hold(+1)
        now = self.clock()
        work.event.arrived = now
        work.event.deadline = work.event.ts_ms / 1000.0 + self.budget_s
        self.main.add(work, work.event.deadline, now)
        self._wake.set()

    async def submit_deferred(self, work: Work) -> None:
        await self._deferred_room.acquire()
        self._hold(+1)
        work.event.arrived = self.clock()
        work.event.deadline = math.inf
        work.event.deferred = True
        self.deferred.append(work)
        self._wake.set()

    async def reject(self, error_type: str, message: str, origin: Origin, raw: bytes | None, ack: AckFn) -> None:
        """Send a message that failed validation to the DLQ; ack it once the broker has the DLQ record."""
        await self._room.acquire()
        self._hold(+1)
        metrics.DLQ.labels(error_type).inc()
        out = Outgoing(self.settings.topics.dlq, origin.key, dlq_record(error_type, message, origin, raw))
        self._deliver_later([(None, ack, out, await self._send(out))], "dlq")

    def _hold(self, n: int) -> None:
        self._held += n
        metrics.QUEUE_DEPTH.set(self._held)

    # ---- the loop ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            lane, items, late = await self._next_batch()
            await self._run_batch(lane, items, late)

    async def drain(self) -> None:
        """Wait for every result handed to the sink to be acknowledged (used at shutdown and in tests)."""
        while self._deliveries:
            await asyncio.gather(*list(self._deliveries), return_exceptions=True)

    async def _next_batch(self) -> tuple[str, list[Pending[Work]], list[Pending[Work]]]:
        while True:
            now = self.clock()
            if self.main.ready(now):
                batch = self.main.take(now)
                return "main", batch.on_time, batch.late
            if self.deferred:
                n = self._deferred_batch_size(now)
                if n:
                    taken = [self.deferred.popleft() for _ in range(n)]
                    return "deferred", [Pending(w, math.inf, w.event.arrived) for w in taken], []
            due = self.main.due_at()
            self._wake.clear()
            timeout = None if due is None else max(due - now, 0.0005)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

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

    async def _run_batch(self, lane: str, items: list[Pending[Work]], late: list[Pending[Work]]) -> None:
        start = self.clock()
        if late and self.policy == "process":
            items, late = items + late, []
        if late and self.policy == "defer":
            await self._defer(late)
            late = []
        if items:
            await self._classify_and_deliver(items, self.primary, start, lane=lane, degraded=False)
        if late:  # policy == degrade
            await self._classify_and_deliver(late, self.fallback, self.clock(), lane=lane, degraded=True)

    async def _classify_and_deliver(
        self, items: list[Pending[Work]], worker: ModelWorker, start: float, *, lane: str, degraded: bool
    ) -> None:
        texts = [p.item.event.text for p in items]
        model_name = worker.classifier.info.name
        results: list[Classification] | None = None
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
            self.service_time.observe(len(items), model_s)
        done = self.clock()
        metrics.BATCH_SIZE.labels(model_name).observe(len(items))
        metrics.MODEL_TIME.labels(model_name).observe(model_s)

        topic = self.settings.topics.enriched
        sends = []
        misses = 0
        for p, result in zip(items, results, strict=True):
            ev = p.item.event
            met = done <= ev.deadline
            misses += not met
            metrics.QUEUE_WAIT.observe(max(start - ev.arrived, 0.0))
            record = enriched_record(
                ev,
                result,
                worker.classifier.info,
                self.taxonomy,
                deadline_met=met,
                degraded=degraded,
                queue_ms=(start - ev.arrived) * 1000.0,
                model_ms=model_s * 1000.0,
                total_ms=(done - ev.ts_ms / 1000.0) * 1000.0,
            )
            out = Outgoing(topic, ev.id.encode(), record, label=result.label)
            sends.append((ev, p.item.ack, out, await self._send(out)))
        if misses:
            metrics.DEADLINE_MISSES.labels(self.policy).inc(misses)
        log.info(
            "batch",
            lane=lane,
            model=model_name,
            size=len(items),
            model_ms=round(model_s * 1000, 1),
            queue_ms=round((start - min(p.item.event.arrived for p in items)) * 1000, 1),
            late=misses,
            degraded=degraded,
            held=self._held,
        )
        self._deliver_later(sends, "enriched")

    async def _defer(self, late: list[Pending[Work]]) -> None:
        sends = []
        for p in late:
            origin = p.item.event.origin
            out = Outgoing(self.settings.topics.deferred, origin.key, p.item.raw, deferred_headers(origin))
            sends.append((p.item.event, p.item.ack, out, await self._send(out)))
        log.info("deferred", size=len(late))
        self._deliver_later(sends, "deferred")

    async def _dead_letter(self, items: list[Pending[Work]], reason: str) -> None:
        sends = []
        for p in items:
            origin = p.item.event.origin
            out = Outgoing(self.settings.topics.dlq, origin.key, dlq_record("model_error", reason, origin, p.item.raw))
            sends.append((p.item.event, p.item.ack, out, await self._send(out)))
            metrics.DLQ.labels("model_error").inc()
        log.error("batch_to_dlq", size=len(items), reason=reason)
        self._deliver_later(sends, "dlq")

    # ---- delivery -----------------------------------------------------------------------------------
    async def _send(self, out: Outgoing) -> Awaitable[Any]:
        """Hand a record to the producer, retrying while the broker is unreachable: never drop it.

        An error the client marks not retriable (a record too large, no authorization) would fail forever:
        it is raised, so the worker stops loudly instead of stalling while it looks healthy.
        """
        delay = 0.1
        while True:
            try:
                return await self.sink.send(out.topic, out.key, out.value, out.headers)
            except Exception as exc:
                if getattr(exc, "retriable", True) is False or getattr(exc.__cause__, "retriable", True) is False:
                    log.error("send_failed_not_retriable", topic=out.topic, error=repr(exc), size=len(out.value))
                    raise
                log.warning("send_failed", topic=out.topic, error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, SEND_RETRY_MAX_S)

    def _deliver_later(self, sends: list[Send], outcome: str) -> None:
        task = asyncio.ensure_future(self._await_and_ack(sends, outcome))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _await_and_ack(self, sends: list[Send], outcome: str) -> None:
        """Ack each input only once the broker holds its output record (at-least-once)."""
        for event, ack, out, fut in sends:
            while True:
                try:
                    await fut
                    break
                except Exception as exc:  # the broker refused it after the client's own retries
                    log.warning("delivery_failed_resending", topic=out.topic, error=repr(exc))
                    await asyncio.sleep(0.5)
                    fut = await self._send(out)
            await _call(ack)
            metrics.EVENTS_OUT.labels(outcome).inc()
            if outcome == "enriched" and event is not None:
                now = self.clock()
                total_s = max(now - event.ts_ms / 1000.0, 0.0)
                metrics.END_TO_END.observe(total_s)
                LIVE.observe_enriched(out.label or "unknown", total_s * 1000.0, now)
            self._hold(-1)
            (self._deferred_room if event is not None and event.deferred else self._room).release()
