"""The classify path's input: `events` and `events.deferred` read a fetch at a time, validated, handed to the
scheduler as one batch. A `mode.Service` the worker's assembly adds to the Faust app (pipeline/worker.py); it
owns its own aiokafka consumer, in its own consumer group (`classify_group`), so none of Faust's per-event
Stream/Event/ack machinery runs on this path (README: "Why the hot path is not a per-event stream").

    getmany(max_records=room) ─validate each→ scheduler.submit_batch ─…broker ack→ offsets done → commit

Guarantees
- At-least-once. An offset is committed only when every record read before it on its partition has its
  result (enriched, deferred or DLQ record) stored by the broker (pipeline/ingest/offsets.py). Commits go
  out every COMMIT_INTERVAL_S while records finish, before partitions are revoked and at stop. A crash
  replays what was not committed: duplicates possible, nothing lost.
- Per-partition order: records are handed to the scheduler in fetch order, which batches them in order.
- Commit before revoke: when a rebalance takes partitions away, the records held from them are finished
  first (the scheduler drains, at most REVOKE_DRAIN_S) and their offsets committed, so a rebalance without a
  crash replays nothing. Records fetched meanwhile from a revoked partition are dropped, not processed: the
  partition's next owner reads them.
- Back-pressure: a fetch asks for at most `scheduler.room()` records of `events` and
  `scheduler.deferred_room()` of `events.deferred`; with no room it waits (aiokafka prefetches at most one
  fetch per partition meanwhile). Memory is bounded by `batching.queue_limit` and 4 x `max_batch`.
- Graceful stop: fetching stops, everything handed to the scheduler is finished (bounded by
  DRAIN_TIMEOUT_S), the offsets committed, then the consumer leaves the group.

Per event only what must be: an Origin, validation, a Work; metrics and logs are per fetch or per batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

import mode
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from pipeline import metrics
from pipeline.batching.scheduler import BatchScheduler, Rejected, Work
from pipeline.config import Settings
from pipeline.ingest.offsets import AckedOffsets
from pipeline.ingest.validate import Rejection, validate
from pipeline.kafka_client import RebalanceListener, bootstrap_servers, client_security_kwargs
from pipeline.kafka_transport import install_tolerant_fetch
from pipeline.output.records import origin_of_deferred
from schemas import Origin
from schemas.types import new_origin

log = structlog.get_logger(__name__)

COMMIT_INTERVAL_S = 0.5  # how stale the committed offsets may be while records finish: what a crash replays
POLL_S = 0.2  # the longest a fetch waits when nothing arrives (then commits and the stop flag are checked)
REVOKE_DRAIN_S = 5.0  # under the group's rebalance timeout (6 s): a slower finish replays the rest
DRAIN_TIMEOUT_S = 60.0
# Group timeouts, as the Faust app's (pipeline/faust_app.py): a restarted worker rejoins in seconds.
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
REBALANCE_TIMEOUT_MS = 6000
MAX_POLL_INTERVAL_MS = 1_000_000  # Faust's default: a model slower than this would be thrown out of the group


def classify_group(app_id: str) -> str:
    """The consumer group of the classify path. Not the app id: Faust's own consumer (the analyze agent on
    events.enriched) is in that group with Faust's assignor, and one group cannot mix assignors."""
    return f"{app_id}.classify"


def new_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings.broker),
        client_id=f"{settings.app_id}-classify",
        group_id=classify_group(settings.app_id),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
        partition_assignment_strategy=(RoundRobinPartitionAssignor,),
        **client_security_kwargs(settings),
    )


def origin_of_record(record: Any) -> Origin:
    """The Origin of an aiokafka ConsumerRecord (timestamp in ms; 0 and absent: none)."""
    headers = record.headers
    return new_origin(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        tuple(headers) if headers else (),
        record.timestamp or None,
    )


class EventReader(mode.Service):
    def __init__(self, settings: Settings, runtime: Any, offsets: AckedOffsets[TopicPartition]) -> None:
        super().__init__()
        self.settings = settings
        self.runtime = runtime  # pipeline.runtime.Runtime: ready() gives the scheduler once the models are loaded
        self.offsets = offsets
        self.events_topic = settings.topics.events
        self.deferred_topic = settings.topics.deferred
        self.consumer: AIOKafkaConsumer | None = None
        self.scheduler: BatchScheduler | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._handing_in = False  # inside submit_batch: let it finish rather than cancel it
        self._owned: set[TopicPartition] = set()  # assigned: their offsets may be committed
        self._fetching: set[TopicPartition] = set()  # assigned and not being revoked: read and handed in
        self._revoking = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._last_commit = 0.0
        self._in_events = metrics.EVENTS_IN.labels(self.events_topic)
        self._in_deferred = metrics.EVENTS_IN.labels(self.deferred_topic)

    # ---- lifecycle --------------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            self.scheduler = await self.runtime.ready()
            install_tolerant_fetch()  # a header name that is not UTF-8 is read, not fatal (kafka_transport.py)
            self.consumer = new_consumer(self.settings)
            self.consumer.subscribe([self.events_topic, self.deferred_topic], listener=RebalanceListener(self))
            await self.consumer.start()
            await self._read(self.scheduler, self.consumer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("reader_failed", error=repr(exc))
            await self.runtime.app.crash(exc)

    async def on_stop(self) -> None:
        """Stop fetching, finish what was handed in, commit, leave the group."""
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            if not self._handing_in:
                task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(task), DRAIN_TIMEOUT_S)
            except (asyncio.CancelledError, TimeoutError):
                pass
            except Exception as exc:
                log.warning("reader_stop_failed", error=repr(exc))
        t0 = time.monotonic()
        if self.scheduler is not None:
            try:
                await asyncio.wait_for(self.scheduler.drain(), DRAIN_TIMEOUT_S)
            except Exception as exc:  # a timeout or the outbox's failure: what is not committed is read again
                log.warning("reader_drain_failed", error=repr(exc), detail="inputs not committed are read again")
        if self.consumer is not None:
            await self._commit()
            log.info("reader_drained", seconds=round(time.monotonic() - t0, 3))
            await self.consumer.stop()

    # ---- the loop ---------------------------------------------------------------------------------------------
    async def _read(self, scheduler: BatchScheduler, consumer: AIOKafkaConsumer) -> None:
        events_topic = self.events_topic
        while not self._stopping:
            if self._revoking.is_set():
                await asyncio.sleep(0.01)  # the revoke handler drains; fetch again once it is done
                continue
            room = scheduler.room()
            if room == 0:
                await scheduler.wait_for_room()
                continue
            fetching = self._fetching
            events_tps = [tp for tp in fetching if tp.topic == events_topic]
            deferred_tps = [tp for tp in fetching if tp.topic != events_topic]
            fetched: dict[TopicPartition, list[Any]] = {}
            deferred_room = scheduler.deferred_room()
            if deferred_tps and deferred_room:  # only what is buffered already: never wait for the deferred lane
                fetched.update(await consumer.getmany(*deferred_tps, timeout_ms=0, max_records=deferred_room))
            if events_tps:
                wait = 0 if fetched else int(POLL_S * 1000)
                fetched.update(await consumer.getmany(*events_tps, timeout_ms=wait, max_records=room))
            elif not fetched:
                await asyncio.sleep(POLL_S)  # no partition of `events` (yet): wait for an assignment or room
            if fetched:
                self._handing_in = True
                try:
                    await self.hand_in(scheduler, fetched)
                finally:
                    self._handing_in = False
            if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
                await self._commit()

    async def hand_in(self, scheduler: BatchScheduler, fetched: dict[TopicPartition, list[Any]]) -> None:
        """Validate a fetch's records and hand them to the scheduler in one call."""
        limits = self.settings.input
        works: list[Work] = []
        deferred: list[Work] = []
        rejects: list[Rejected] = []
        n_events = n_deferred = 0
        for tp, records in fetched.items():
            if tp not in self._fetching or not self.offsets.read(tp, [r.offset for r in records]):
                continue  # revoked since the fetch: its next owner reads these
            is_deferred = tp.topic != self.events_topic
            add = deferred.append if is_deferred else works.append
            for r in records:
                origin = origin_of_record(r)
                if is_deferred:
                    origin = origin_of_deferred(origin)
                value = r.value
                result = validate(value, origin, limits)
                if type(result) is Rejection:
                    rejects.append(Rejected(result.type, result.message, origin, value, (tp, r.offset)))
                else:
                    add(Work(result, value, None, (tp, r.offset)))  # type: ignore[arg-type]  # an Event
            if is_deferred:
                n_deferred += len(records)
            else:
                n_events += len(records)
        if n_events:
            self._in_events.inc(n_events)
        if n_deferred:
            self._in_deferred.inc(n_deferred)
        if works or deferred or rejects:
            await scheduler.submit_batch(works, deferred, rejects)

    # ---- offsets ----------------------------------------------------------------------------------------------
    async def _commit(self, tps: Iterable[TopicPartition] | None = None) -> None:
        """Commit the finished prefix of each owned partition (of `tps`) that moved; a failure only means
        that more is read again, so it is logged and retried at the next commit."""
        consumer = self.consumer
        if consumer is None:
            return
        async with self._commit_lock:
            self._last_commit = time.monotonic()
            offsets = {tp: o for tp, o in self.offsets.advanced(tps).items() if tp in self._owned}
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except Exception as exc:
                log.warning("commit_failed", error=repr(exc), partitions=len(offsets))
                return
            self.offsets.committed(offsets)

    async def on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Finish what is held from the revoked partitions, commit it, and forget them."""
        gone = set(revoked)
        self._fetching -= gone
        self._revoking.set()
        try:
            scheduler = self.scheduler
            if scheduler is not None and any(self.offsets.held(tp) for tp in gone):
                try:
                    await asyncio.wait_for(scheduler.drain(), REVOKE_DRAIN_S)
                except Exception as exc:  # a timeout or the outbox's failure: the next owner reads the rest again
                    log.warning("revoke_drain_failed", error=repr(exc))
            await self._commit(gone)
            self._owned -= gone
            self.offsets.forget(gone)
        finally:
            self._revoking.clear()
        log.info("partitions_revoked", group=classify_group(self.settings.app_id), revoked=_by_topic(gone))

    def on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._owned = set(assigned)
        self._fetching = set(assigned)
        self.offsets.assign(assigned)
        log.info("partitions_assigned", group=classify_group(self.settings.app_id), assigned=_by_topic(assigned))

    # ---- observation ------------------------------------------------------------------------------------------
    async def record_lag(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            done = self.offsets.last_committed(tp) or 0
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(high - done, 0))


def _by_topic(tps: Iterable[TopicPartition]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for tp in sorted(tps):
        out.setdefault(tp.topic, []).append(tp.partition)
    return out
