"""The one way results leave the worker: hand records to the producer, wait for the broker's acks, then ack
the inputs those records depend on. Used by the classify path (batching/scheduler.py) and the window analytics
(analytics/runner.py).

    send_batch(records, then_ack) ─hand off each record (retrying)→ producer ─broker ack→ then_ack[i] → then()

Guarantees
- Ack after the broker. `then_ack[i]` runs only once the broker holds records[0] … records[i]; `then()` (the
  caller's per-batch bookkeeping: observers, freeing room) runs once all of the batch's acks have run. Inputs
  are committed only when acked, so a crash at any moment replays every input whose ack had not run:
  at-least-once, duplicates possible after a crash, nothing lost.
- Order. A batch's records are handed to the producer in the order given and its acks run in that order, one
  after the other. Batches complete independently (Faust commits the contiguous acked prefix of a partition,
  so an ack that overtakes an earlier one waits to be committed); with `ordered=True` a batch's acks also wait
  for every earlier batch's, for a caller that commits offsets itself.
- Retries, never a drop. A hand-off that fails with a retriable error is retried after 0.1 s, the pause
  doubling up to `retry_max_s` (5 s), for as long as it takes; `send_batch` waits meanwhile, so the caller's
  loop pulls nothing new while the broker is unreachable (back-pressure). A record the broker refuses after
  the client's own retries is handed off again after `resend_pause_s` (0.5 s), for as long as it takes.
- Not retriable is fatal. An error marked `retriable = False` (on the exception or on its cause: a record too
  large, no authorization) would fail forever. It is logged once, the batch's remaining inputs are not acked
  (a restart replays them), `on_failure` is called, and every later `send_batch()` and `drain()` raises it:
  the worker stops loudly instead of stalling while it looks healthy. So is an ack or `then()` that raises.
- Bounds. One asyncio task per batch while it waits for the broker, none per record; how many batches are in
  flight is bounded by the caller's own hold limit (the scheduler's `queue_limit`, the analytics' `max_held`).
- `drain()` returns once every batch handed in so far has been stored and acked.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import structlog

from pipeline.output.sink import Headers, Sink

log = structlog.get_logger(__name__)

AckFn = Callable[[], Awaitable[Any] | Any]
Sleep = Callable[[float], Awaitable[Any]]

SEND_RETRY_FIRST_S = 0.1
SEND_RETRY_MAX_S = 5.0
RESEND_PAUSE_S = 0.5


class Outgoing(NamedTuple):
    """A record to write. A named tuple, not a frozen dataclass: built once per record on the hot path, where a
    frozen dataclass's `__init__` (one `object.__setattr__` per field) costs about three times as much."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers | None = None


async def run_ack(ack: AckFn) -> None:
    """Call an ack that may be sync (Faust's `stream.ack`) or async."""
    result = ack()
    if inspect.isawaitable(result):
        await result


def retriable(exc: BaseException) -> bool:
    """False when the client says retrying cannot help (aiokafka sets `retriable`; Faust may wrap its error)."""
    return getattr(exc, "retriable", True) is not False and getattr(exc.__cause__, "retriable", True) is not False


def _succeeded(future: asyncio.Future[Any]) -> bool:
    return not future.cancelled() and future.exception() is None


class Outbox:
    def __init__(
        self,
        sink: Sink,
        *,
        ordered: bool = False,
        retry_max_s: float = SEND_RETRY_MAX_S,
        resend_pause_s: float = RESEND_PAUSE_S,
        on_failure: Callable[[BaseException], None] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.sink = sink
        self.ordered = ordered
        self.retry_max_s = retry_max_s
        self.resend_pause_s = resend_pause_s
        self.on_failure = on_failure
        self.sleep = sleep
        self.failure: BaseException | None = None
        self._in_flight: set[asyncio.Future[None]] = set()
        self._last: asyncio.Future[None] | None = None  # ordered: the batch the next one waits for

    @property
    def in_flight(self) -> int:
        """Batches handed in whose acks have not all run yet."""
        return len(self._in_flight)

    async def send_batch(
        self, records: Sequence[Outgoing], then_ack: Sequence[AckFn] = (), *, then: Callable[[], None] | None = None
    ) -> asyncio.Future[None]:
        """Hand every record to the producer (retrying, see above) and return once all are handed over.

        The returned future resolves after the broker holds every record, `then_ack[i]` has run after
        records[:i+1] were stored, and `then()` has run. Awaiting it is optional: `drain()` waits for all.
        """
        if len(then_ack) > len(records):
            raise ValueError("then_ack[i] belongs to records[i]: more acks than records")
        self.raise_if_failed()
        handed: list[Awaitable[Any]] = []
        send_many = getattr(self.sink, "send_many", None)
        if send_many is not None and records:  # a sink that takes a batch at once (all or nothing)
            try:
                handed = await send_many(records)
            except Exception as exc:
                if not retriable(exc):  # some records may be handed over already
                    log.error("send_failed_not_retriable", error=repr(exc), records=len(records))
                    self._fail(exc)
                    raise
                log.warning("send_many_failed", error=repr(exc), records=len(records), detail="handed over one by one")
        if not handed:
            send = self.sink.send
            for r in records:  # the usual case inline: one await per record; a failed hand-off retries below
                try:
                    handed.append(await send(r.topic, r.key, r.value, r.headers))
                except Exception as exc:
                    handed.append(await self._hand_off(r, exc))
        after = self._last if self.ordered else None
        batch = asyncio.ensure_future(self._complete(records, handed, then_ack, then, after))
        self._in_flight.add(batch)
        batch.add_done_callback(self._finished)
        if self.ordered:
            self._last = batch
        return batch

    async def deliver(
        self, records: Sequence[Outgoing], then_ack: Sequence[AckFn] = (), *, then: Callable[[], None] | None = None
    ) -> None:
        """`send_batch` and wait for it to complete."""
        await (await self.send_batch(records, then_ack, then=then))

    async def drain(self) -> None:
        """Wait until every batch handed in so far (and any handed in meanwhile) is stored and acked."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    # ---- internals --------------------------------------------------------------------------------------
    async def _hand_off(self, record: Outgoing, failed: Exception | None = None) -> Awaitable[Any]:
        """Hand `record` to the sink, retrying; `failed`: the error of a first try made by the caller."""
        delay = SEND_RETRY_FIRST_S
        while True:
            try:
                if failed is not None:
                    exc, failed = failed, None
                    raise exc
                return await self.sink.send(record.topic, record.key, record.value, record.headers)
            except Exception as exc:
                if not retriable(exc):
                    log.error("send_failed_not_retriable", topic=record.topic, error=repr(exc), size=len(record.value))
                    self._fail(exc)
                    raise
                log.warning("send_failed", topic=record.topic, error=repr(exc), retry_in_s=delay)
                await self.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)

    async def _stored(self, record: Outgoing, ack: Awaitable[Any]) -> None:
        """Wait for the broker's ack of one record, handing it off again while the broker refuses it."""
        while True:
            try:
                await ack
                return
            except Exception as exc:  # the broker refused it after the client's own retries
                if not retriable(exc):
                    log.error("delivery_refused_not_retriable", topic=record.topic, error=repr(exc))
                    raise
                log.warning("delivery_failed_resending", topic=record.topic, error=repr(exc))
                await self.sleep(self.resend_pause_s)
                ack = await self._hand_off(record)

    async def _complete(
        self,
        records: Sequence[Outgoing],
        handed: list[Awaitable[Any]],
        then_ack: Sequence[AckFn],
        then: Callable[[], None] | None,
        after: asyncio.Future[None] | None,
    ) -> None:
        try:
            if after is not None:
                await asyncio.shield(after)  # shielded: cancelling this batch must not cancel the earlier one
            n_acks = len(then_ack)
            # Awaitables seen stored: the records of one producer batch (one per partition) share one, so
            # mostly a stored record costs a set lookup, no await.
            stored: set[int] = set()
            for i, (record, ack) in enumerate(zip(records, handed, strict=True)):
                if id(ack) not in stored:
                    if isinstance(ack, asyncio.Future) and ack.done() and _succeeded(ack):
                        stored.add(id(ack))  # alive while `handed` is: its id is not reused meanwhile
                    else:
                        await self._stored(record, ack)
                if i < n_acks:
                    await run_ack(then_ack[i])
            if then is not None:
                then()
        except Exception as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: BaseException) -> None:
        if self.failure is not None:
            return
        self.failure = exc
        log.error("outbox_failed", error=repr(exc))
        if self.on_failure is not None:
            self.on_failure(exc)

    def _finished(self, batch: asyncio.Future[None]) -> None:
        self._in_flight.discard(batch)
        if self._last is batch:
            self._last = None
        if not batch.cancelled():
            batch.exception()  # retrieved here: the failure is kept in self.failure and raised from there
