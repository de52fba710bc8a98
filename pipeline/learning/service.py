"""Learning from analysts in a worker: the feedback topic in, the learning store (compacted topic) in and out,
the trainer behind them. A `mode.Service` added to the app by pipeline/worker.py; the runtime calls `begin()`
once the classifier is loaded and before the worker takes events, so a restarted worker labels its first batch
with the head the store holds.

    events.feedback ─(group <app>.feedback)→ parse ─→ example / label / lookup record ─→ events.learning
                                                 └─→ events.dlq (bad feedback, with the reason)
    events.learning ─(every worker, from the start)→ Taught ─poke→ Trainer ─swap→ classifier
                                                          └─ lookups this worker can answer → example record

Guarantees
- Feedback is handled once per consumer group member that owns its partition (group `<app_id>.feedback`),
  at least once: its offset is committed only after its outcome (store record or DLQ record) is stored by the
  broker; a crash replays it, and a replayed example is the same key and value in the store.
- Feedback by id: the owner looks the id up in its recent events (pipeline/learning/cache.py). An id it does
  not know may have been classified by another worker: the owner writes a `lookup` record to the store, which
  every worker reads; a worker that knows the id answers with the example (`resolves` = the feedback's
  position). The owner then tombstones the lookup and commits. No answer within `learning.resolve_timeout_s`:
  the feedback goes to the DLQ as `unknown_id` (the event is older than every worker's `recent_events`, or
  its worker has restarted since). A lookup outstanding when its owner loses the partition is asked again by
  the next owner. An answer later than the deadline is still learned (the DLQ record then names an id that
  was found after all).
- Every worker reads the whole store from its start (one partition: the same records in the same order for
  all), so all workers hold the same examples and labels a moment after they are written; the trainer turns
  them into the same head and version (pipeline/learning/trainer.py). Convergence takes the store's read
  latency plus the debounce plus one training.
- New labels: `{"label": NAME, "description": ...}` on the feedback topic becomes a `label:` record; each worker
  adds its prototype (the description's embedding) at its next swap, without a restart. Feedback is keyed by
  label, so a label's definition and its examples are read in order.
- Never blocks the loop: encoding and training happen in the trainer, off the loop; this service only parses
  and routes records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mode
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import metrics
from pipeline.config import Settings
from pipeline.ingest.offsets import AckedOffsets
from pipeline.ingest.reader import origin_of_record
from pipeline.ingest.validate import Rejection
from pipeline.kafka_client import RebalanceListener, bootstrap_servers, client_security_kwargs, ensure_topics
from pipeline.kafka_transport import aiokafka_producer
from pipeline.learning.cache import RecentEvents
from pipeline.learning.feedback import Feedback, example_key, feedback_key, parse_feedback
from pipeline.learning.store import (
    HEAD_KEY,
    Lookup,
    Taught,
    example_record,
    head_record,
    label_record,
    lookup_key,
    lookup_record,
)
from pipeline.learning.trainer import LoadFn, Trainer, TrainFn
from pipeline.model.worker import ModelWorker
from pipeline.output.outbox import Outbox, Outgoing
from pipeline.output.records import dlq_record
from pipeline.output.sink import Headers
from schemas import Origin

log = structlog.get_logger(__name__)

COMMIT_INTERVAL_S = 0.5
POLL_MS = 200
EXPIRE_EVERY_S = 0.5
TOMBSTONE = b""  # an Outgoing value meaning "no value": the sink sends None (the store never holds b"")
COMPACTED = {"cleanup.policy": "compact", "retention.ms": "-1"}


def feedback_group(app_id: str) -> str:
    return f"{app_id}.feedback"


class _Sink:
    """Faust's aiokafka producer, one record at a time, TOMBSTONE as a null value (a compaction delete)."""

    def __init__(self, producer: Callable[[], Any]) -> None:
        self.producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> Awaitable[Any]:
        delivered: Awaitable[Any] = await self.producer().send(
            topic, None if value == TOMBSTONE else value, key=key, headers=headers
        )
        return delivered


@dataclass(slots=True)
class _Pending:
    """Feedback by an id its owner did not know, waiting for another worker's answer."""

    position: tuple[TopicPartition, int]
    origin: Origin
    value: bytes
    deadline: float


class LearningService(mode.Service):
    def __init__(
        self,
        settings: Settings,
        app: Any,
        recent: RecentEvents,
        *,
        backend: Callable[[], tuple[TrainFn, LoadFn]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.app = app  # the Faust app: its producer sends our records
        self.recent = recent
        self.backend = backend
        self.clock = clock
        self.taught = Taught()
        self.trainer: Trainer | None = None
        self.outbox = Outbox(_Sink(lambda: aiokafka_producer(app.producer)))
        self.feedback_topic = settings.topics.feedback
        self.store_topic = settings.topics.learning
        self.offsets: AckedOffsets[TopicPartition] = AckedOffsets()
        self._pending: dict[str, _Pending] = {}  # feedback ref -> waiting for a lookup's answer
        self._answered: set[str] = set()  # lookups this worker answered (once each)
        self._defined: set[str] = set()  # labels defined by feedback this worker handled, not yet in the store
        self._owned: set[TopicPartition] = set()
        self._loops: list[asyncio.Future[Any]] = []
        self._store: AIOKafkaConsumer | None = None
        self._feedback: AIOKafkaConsumer | None = None
        self._last_commit = 0.0

    # ---- start: from the runtime, once the classifier is loaded --------------------------------------------
    async def begin(self, worker: ModelWorker) -> None:
        """Read the store back (bounded by learning.restore_timeout_s), bring the classifier up to it, then
        start the loops: the store, the feedback, the trainer, the lookups' expiry."""
        s = self.settings
        kwargs = client_security_kwargs(s)
        bootstrap = bootstrap_servers(s.broker)
        topics = ensure_topics(bootstrap, [self.feedback_topic], s.topics.partitions, s.topics.replicas, **kwargs)
        await asyncio.wait_for(topics, s.learning.restore_timeout_s)
        store = ensure_topics(bootstrap, [self.store_topic], 1, s.topics.replicas, COMPACTED, **kwargs)
        await asyncio.wait_for(store, s.learning.restore_timeout_s)
        if self.backend is None:
            from pipeline.learning.trainer import head_backend

            self.backend = head_backend
        train, load = self.backend()
        self.trainer = Trainer(worker, self.taught, s.learning, train=train, load=load, publish_head=self._publish_head)
        self._store = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50, **kwargs
        )
        await self._store.start()
        store_tp = TopicPartition(self.store_topic, 0)
        self._store.assign([store_tp])
        await self._store.seek_to_beginning(store_tp)
        t0 = time.monotonic()
        try:
            records = await asyncio.wait_for(self._read_store_to_end(store_tp), s.learning.restore_timeout_s)
            version = await asyncio.wait_for(self.trainer.refresh(), s.learning.restore_timeout_s)
            log.info("learning_restored", records=records, version=version, seconds=round(time.monotonic() - t0, 3))
        except TimeoutError:
            log.warning("learning_restore_slow", detail="classifying meanwhile; the head follows when read")
        except Exception as exc:  # the loops below try again at the next change
            log.error("learning_restore_failed", error=repr(exc))
        self._loops = [
            asyncio.ensure_future(self._guard(self._store_loop())),
            asyncio.ensure_future(self._guard(self._feedback_loop())),
            asyncio.ensure_future(self._guard(self.trainer.run())),
            asyncio.ensure_future(self._guard(self._expire_loop())),
        ]

    async def _guard(self, coro: Awaitable[None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # learning stops; classification goes on with the taxonomy it has
            log.error("learning_failed", error=repr(exc))

    async def on_stop(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self.trainer is not None:
            await self.trainer.aclose()
        try:
            await asyncio.wait_for(self.outbox.drain(), 10.0)
        except Exception as exc:
            log.warning("learning_drain_failed", error=repr(exc))
        if self._feedback is not None:
            await self._commit()
            await self._feedback.stop()
        if self._store is not None:
            await self._store.stop()

    # ---- what the web page and the CLI read ---------------------------------------------------------------
    def label_names(self) -> list[str]:
        if self.trainer is None:
            return []
        return list(self.trainer.classifier.names)

    @property
    def version(self) -> str | None:
        return None if self.trainer is None else self.trainer.version

    def known_labels(self) -> set[str]:
        configured = self.trainer.classifier.configured.names if self.trainer is not None else []
        return set(configured) | set(self.taught.labels) | self._defined

    async def publish_feedback(self, value: bytes) -> Feedback | Rejection:
        """Check feedback as the worker will (known label, shape) and publish it to the feedback topic, keyed
        by its label; returns once the broker holds it (the dashboard's corrections)."""
        parsed = parse_feedback(value, self.known_labels(), self.settings.input)
        if isinstance(parsed, Rejection):
            return parsed
        producer = aiokafka_producer(self.app.producer)
        await (await producer.send(self.feedback_topic, value, key=feedback_key(parsed.label)))
        return parsed

    # ---- the store ---------------------------------------------------------------------------------------
    async def _read_store_to_end(self, tp: TopicPartition) -> int:
        assert self._store is not None
        end = (await self._store.end_offsets([tp]))[tp]
        n = 0
        while True:
            batch = await self._store.getmany(tp, timeout_ms=POLL_MS)
            for records in batch.values():
                n += len(records)
                for r in records:
                    self.taught.apply(r.key, r.value)
            if not batch and await self._store.position(tp) >= end:
                return n

    async def _store_loop(self) -> None:
        assert self._store is not None and self.trainer is not None
        while True:
            batch = await self._store.getmany(timeout_ms=POLL_MS)
            for records in batch.values():
                await self.apply_store_records([(r.key, r.value) for r in records])

    async def apply_store_records(self, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
        """Apply store records read: retrain on new examples or labels, answer lookups this worker can, finish
        this worker's pending feedback that another worker answered."""
        assert self.trainer is not None
        changed = False
        for key, value in records:
            change = self.taught.apply(key, value)
            if change in ("examples", "labels"):
                changed = True
            if change == "labels":
                self._defined.difference_update(self.taught.labels)
            if change == "lookup" and key is not None:
                ref = key.decode("utf-8", "replace")[len("lookup:") :]
                lookup = self.taught.lookups.get(ref)
                if lookup is not None:
                    await self._answer(lookup)
                else:  # tombstoned: answered or expired, and never asked again under this ref
                    self._answered.discard(ref)
        if changed:
            self.trainer.poke()
        for ref in [r for r in self._pending if r in self.taught.resolved]:
            await self._finish_lookup(ref, None)

    async def _answer(self, lookup: Lookup) -> None:
        text = self.recent.get(lookup.id)
        if text is None or lookup.ref in self._answered or lookup.ref in self._pending:
            return
        self._answered.add(lookup.ref)
        value = example_record(text, lookup.label, by=lookup.by, ts_ms=lookup.ts_ms, resolves=lookup.ref)
        await self._send([Outgoing(self.store_topic, example_key(text).encode(), value)])
        log.info("lookup_answered", feedback=lookup.ref)

    async def _publish_head(self, version: str, data: bytes) -> None:
        await self.outbox.deliver([Outgoing(self.store_topic, HEAD_KEY.encode(), head_record(version, data))])

    # ---- the feedback topic --------------------------------------------------------------------------------
    async def _feedback_loop(self) -> None:
        s = self.settings
        self._feedback = consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(s.broker),
            group_id=feedback_group(s.app_id),
            client_id=f"{s.app_id}-feedback",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            **client_security_kwargs(s),
        )
        consumer.subscribe([self.feedback_topic], listener=RebalanceListener(self))
        await consumer.start()
        while True:
            batch = await consumer.getmany(timeout_ms=POLL_MS)
            for tp, records in batch.items():
                if tp not in self._owned or not self.offsets.read(tp, [r.offset for r in records]):
                    continue
                for r in records:
                    await self.handle_feedback(tp, r)
            if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
                await self._commit()

    async def handle_feedback(self, tp: TopicPartition, record: Any) -> None:
        """Route one feedback record: an example, a label or a lookup to the store; bad feedback to the DLQ."""
        origin = origin_of_record(record)
        value: bytes = record.value or b""
        position = (tp, record.offset)
        parsed = parse_feedback(record.value, self.known_labels(), self.settings.input)
        if isinstance(parsed, Rejection):
            await self._reject(parsed.type, parsed.message, origin, value, position)
            return
        if parsed.is_new_label:
            assert parsed.description is not None
            self._defined.add(parsed.label)
            out = Outgoing(
                self.store_topic,
                f"label:{parsed.label}".encode(),
                label_record(parsed.label, parsed.description, by=parsed.by, ts_ms=parsed.ts_ms),
            )
            await self._send([out], position, accepted="label")
            return
        text = parsed.text if parsed.text is not None else self.recent.get(parsed.id or "")
        if text is not None:
            await self._send([self._example(text, parsed)], position, accepted="text" if parsed.text else "id")
            return
        await self._ask(origin, value, position, parsed)

    def _example(self, text: str, fb: Feedback) -> Outgoing:
        return Outgoing(
            self.store_topic, example_key(text).encode(), example_record(text, fb.label, by=fb.by, ts_ms=fb.ts_ms)
        )

    async def _ask(self, origin: Origin, value: bytes, position: tuple[TopicPartition, int], fb: Feedback) -> None:
        """Another worker may know the id: ask through the store, wait for an answer until the deadline."""
        assert fb.id is not None
        ref = origin.ref
        now = self.clock()
        self._pending[ref] = _Pending(position, origin, value, now + self.settings.learning.resolve_timeout_s)
        lookup = Lookup(ref, fb.id, fb.label, fb.by, fb.ts_ms, int(time.time() * 1000))
        await self._send([Outgoing(self.store_topic, lookup_key(ref), lookup_record(lookup))])

    async def _finish_lookup(self, ref: str, reason: str | None) -> None:
        """A lookup answered (reason None) or expired: tombstone it, DLQ the feedback if expired, commit it."""
        pending = self._pending.pop(ref, None)
        if pending is None:
            return
        outs = [Outgoing(self.store_topic, lookup_key(ref), TOMBSTONE)]
        if reason is None:
            await self._send(outs, pending.position, accepted="id")
            return
        message = f"no worker knows event id in {ref} (older than learning.recent_events, or its worker restarted)"
        outs.append(self._dlq(reason, message, pending.origin, pending.value))
        await self._send(outs, pending.position, rejected=reason)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY_S)
            await self.expire()

    async def expire(self) -> None:
        now = self.clock()
        for ref in [r for r, p in self._pending.items() if p.deadline <= now]:
            await self._finish_lookup(ref, "unknown_id")

    async def _reject(
        self, reason: str, message: str, origin: Origin, value: bytes, position: tuple[TopicPartition, int]
    ) -> None:
        await self._send([self._dlq(reason, message, origin, value)], position, rejected=reason)

    def _dlq(self, reason: str, message: str, origin: Origin, value: bytes) -> Outgoing:
        return Outgoing(self.settings.topics.dlq, origin.key, dlq_record(reason, message, origin, value or None))

    async def _send(
        self,
        outs: list[Outgoing],
        position: tuple[TopicPartition, int] | None = None,
        *,
        accepted: str | None = None,
        rejected: str | None = None,
    ) -> None:
        """Hand records to the outbox; once the broker holds them, the feedback at `position` is done."""

        def then() -> None:
            if position is not None:
                self.offsets.done([position])
            if accepted is not None:
                metrics.FEEDBACK.labels("accepted", accepted).inc()
            if rejected is not None:
                metrics.FEEDBACK.labels("rejected", rejected).inc()
                metrics.DLQ.labels(rejected).inc()

        await self.outbox.send_batch(outs, then=then)

    async def _commit(self, tps: Sequence[TopicPartition] | None = None) -> None:
        consumer = self._feedback
        if consumer is None:
            return
        self._last_commit = time.monotonic()
        offsets = {tp: o for tp, o in self.offsets.advanced(tps).items() if tp in self._owned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # only means more is read again
            log.warning("feedback_commit_failed", error=repr(exc))
            return
        self.offsets.committed(offsets)

    async def on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Commit what is done; lookups outstanding for the revoked partitions are asked again by their next
        owner (their feedback is not committed)."""
        gone = set(revoked)
        await self._commit(list(gone))
        for ref in [r for r, p in self._pending.items() if p.position[0] in gone]:
            del self._pending[ref]
        self._owned -= gone
        self.offsets.forget(gone)

    def on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._owned = set(assigned)
        self.offsets.assign(assigned)
