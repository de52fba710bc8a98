"""Faust's aiokafka transport with four changes: our fetch wait, a commit before a revoke, a fetch that spans a
rebalance read again instead of handed on (it made Faust skip records), and records whose header names are not
UTF-8 read instead of crashing the consumer. Also the one place that touches private
attributes of Faust and aiokafka: each use is marked `# noqa: SLF001` with its reason, the rest of the code
calls the named functions below (`committed_offsets`, `forget_unacked`, `aiokafka_producer`), and
tests/pipeline/test_kafka_transport.py pins the versions these were written against (faust-streaming 0.15.3,
aiokafka 0.14.0).

Faust 0.15 hard-codes `fetch_max_wait_ms=1500`. Apache Kafka answers a waiting fetch as soon as data
arrives, so that only matters when idle; tansu waits the full time before answering (brokers.md), which
would put 1.5 s into every hop. We set it from `Settings.fetch_max_wait_ms` (default 20 ms).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, SupportsIndex

import aiokafka
import structlog
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import _DefaultRecordBatchPy
from aiokafka.record.memory_records import MemoryRecords, _MemoryRecordsPy
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, ConsumerT, Message, ProducerT

log = structlog.get_logger(__name__)


# ---- records whose header names are not UTF-8 --------------------------------------------------------------
# Kafka says a header name is a UTF-8 string, but it carries bytes and some producers (librdkafka) send any.
# aiokafka decodes names strictly (C and pure-Python parser alike): the UnicodeDecodeError escaped Faust's
# fetcher and stopped the worker, and again after every restart, since the record is still next. Here a
# record batch that fails so is parsed once more with aiokafka's pure-Python parser over a buffer that
# decodes leniently: the bad bytes of a name become `\xNN` escapes, everything else is as sent, and the
# record goes on like any other (enriched, or to the DLQ with the escaped name). Batches that parse are
# untouched: the fast C parser does all the usual work.
class _LenientNames(bytearray):
    """A record buffer whose slices decode with `backslashreplace`: what the parser's
    `buffer[a:b].decode("utf-8")` of a header name needs to escape bad bytes instead of raising."""

    def __getitem__(self, index: SupportsIndex | slice) -> Any:
        got = super().__getitem__(index)
        return _LenientNames(got) if isinstance(index, slice) else got

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return super().decode(encoding, "backslashreplace")


class _LenientBatch(_DefaultRecordBatchPy):
    """aiokafka's pure-Python v2 record batch reading header names leniently."""

    _buffer: bytearray  # aiokafka's attribute (untyped there)

    def __init__(self, buffer: bytes | bytearray | memoryview) -> None:
        super().__init__(buffer)
        self._buffer = _LenientNames(self._buffer)

    def __iter__(self) -> _LenientBatch:
        super().__iter__()  # a compressed batch swaps in its decompressed buffer here
        if not isinstance(self._buffer, _LenientNames):
            self._buffer = _LenientNames(self._buffer)
        return self


class _LenientRecords(_MemoryRecordsPy):
    """The batches of a fetched buffer from the one holding offset `resume` on, v2 ones as `_LenientBatch`."""

    def __init__(self, data: bytes, resume: int) -> None:
        super().__init__(data)
        while self._next_slice is not None and _next_offset(self._next_slice) <= resume:
            self._cache_next()

    def next_batch(self, *args: Any, **kwargs: Any) -> Any:
        raw = self._next_slice
        batch = super().next_batch(*args, **kwargs)
        if raw is not None and batch is not None and batch.magic >= 2:  # v2, the format with headers
            return _LenientBatch(raw)
        return batch


def _next_offset(raw: memoryview) -> int:
    """The offset after a batch, from its header (v2: base offset + last offset delta; v0/v1: its offset)."""
    base = int.from_bytes(raw[0:8], "big", signed=True)
    if raw[16] >= 2:  # magic byte
        return base + int.from_bytes(raw[23:27], "big", signed=True) + 1
    return base + 1


class _KeptRecords(MemoryRecords):  # the C class when built, else pure Python
    """aiokafka's MemoryRecords that keeps the fetched bytes, to parse them again if need be."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.data = data


class TolerantPartitionRecords(fetcher.PartitionRecords):
    """aiokafka's records of one fetched partition; a batch that fails on a header name is read again leniently
    from the record that failed (the records before it were returned already)."""

    _records: Any  # aiokafka's attribute (untyped there): MemoryRecords, or ours after a lenient re-read

    def _unpack_records(self) -> Iterator[Any]:
        try:
            yield from super()._unpack_records()
        except (UnicodeDecodeError, CorruptRecordException) as error:
            # The pure-Python parser (AIOKAFKA_NO_EXTENSIONS) wraps the UnicodeDecodeError in a CorruptRecordException.
            exc = error if isinstance(error, UnicodeDecodeError) else error.__cause__
            data = getattr(self._records, "data", None)
            if not isinstance(exc, UnicodeDecodeError) or data is None:
                raise
            resume = self.next_fetch_offset
            log.warning(
                "header_name_not_utf8",
                topic=self._tp.topic,
                partition=self._tp.partition,
                offset=resume,
                detail=f"{exc.reason} at byte {exc.start} of a header name; the bad bytes are kept as \\xNN escapes",
            )
            self._records = _LenientRecords(data, resume)
            yield from super()._unpack_records()


def install_tolerant_fetch() -> None:
    """Make aiokafka's fetcher (module globals: it has no hook) use the classes above. Idempotent; process-wide,
    which only changes what happens where aiokafka would have raised."""
    fetcher.MemoryRecords = _KeptRecords
    fetcher.PartitionRecords = TolerantPartitionRecords


# ---- Faust's transport ------------------------------------------------------------------------------------------
class ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        install_tolerant_fetch()
        consumer = super()._create_worker_consumer(transport)
        # Private attribute of aiokafka 0.14 (read when the consumer starts); the version is pinned.
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", 500)  # noqa: SLF001  no public setting
        return consumer

    async def subscribe(self, topics: Iterable[str]) -> None:
        # The classify path has its own consumer (pipeline/ingest/reader.py): with the analytics off no Faust
        # agent reads anything, and aiokafka refuses an empty subscription (the worker crashed). Unsubscribed,
        # Faust's consumer is never assigned anything, so its table recovery, which the app's services, timers
        # and web server wait for, would never end: with no tables and no topics there is nothing to recover.
        topics = set(topics)
        if topics:
            await super().subscribe(topics)
        else:
            tables: Any = self.app.tables  # TableManager; its type TableManagerT declares no `recovery`
            tables.recovery.completed.set()


REVOKE_COMMIT_ROUNDS = 5


class Consumer(driver.Consumer):
    rebalances = 0  # revokes and assignments seen: a fetch that spans one is stale

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        # Faust 0.15.3's getmany() reads the generation id only after this fetch returns, so a batch fetched
        # before a rebalance is handed on after it as if it were new. Its first record set Faust's read offset
        # past where the partition was just re-seeked (its committed offset), and Faust then dropped the records
        # read again from there as already seen ("DROPPED MESSAGE ROFF"), or, with a committed offset, counted
        # the skipped range as a gap, i.e. acked: records held uncommitted in an analytics window and let go at
        # the revoke were never read again by the worker that got the partition back (their windows summarized
        # without them, their stats final but short; seen on a loaded machine, tests/e2e/test_scale_out.py).
        # A batch whose fetch spanned a revoke or an assignment is dropped here, and each of its partitions
        # still ours goes back to where a rebalance puts it (the committed offset, else the earliest): the
        # batch may as well have been fetched after the re-seek, past records nobody has seen yet.
        seen = self.rebalances
        records, active = await super()._wait_next_records(timeout)  # noqa: SLF001  faust-streaming 0.15.3: no hook
        if self.rebalances == seen or not records:
            return records, active
        await self._seek_back(set(records))
        log.info("stale_fetch_dropped", records=sum(len(r) for r in records.values()), partitions=len(records))
        return None, active

    async def _seek_back(self, partitions: set[TP]) -> None:
        ours = partitions & self.assignment()
        committed: Mapping[TP, int | None] = self._committed_offset  # noqa: SLF001  faust-streaming 0.15.3: no accessor
        unknown = [tp for tp in ours if not committed.get(tp)]
        earliest = await self.earliest_offsets(*unknown) if unknown else {}
        for tp in ours:
            offset = committed.get(tp) or earliest.get(tp)
            if offset is not None:
                await self.seek(tp, offset)  # also sets Faust's read offset

    async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        self.rebalances += 1
        await super().on_partitions_assigned(assigned, generation_id)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        self.rebalances += 1  # before any await: a fetch returning meanwhile is stale
        # Faust 0.15.3 forgets the acked-but-uncommitted offsets of revoked partitions before the app's own
        # revoke-time commit, so every rebalance replayed up to a commit interval of finished events
        # (duplicates without any crash, found by tests/e2e/test_faults.py). Commit them while we still own them.
        # One commit is not enough: `commit()` returns without committing while the periodic commit is under way,
        # and acks go on arriving during either. So commit until no revoked partition holds an ack (a few rounds;
        # an ack behind a gap cannot be committed yet and stays). No await between the last check and Faust's
        # clean-up below, so no ack can slip in between.
        try:
            for _ in range(REVOKE_COMMIT_ROUNDS):
                await self.commit()
                if not any(self._acked.get(tp) for tp in revoked):
                    break
        except Exception as exc:  # a failed commit only means duplicates, as before
            self.log.warning("commit before revoke failed: %r", exc)
        await super().on_partitions_revoked(revoked)


class Transport(driver.Transport):
    Consumer: ClassVar[type] = Consumer


# ---- Faust's consumer bookkeeping -------------------------------------------------------------------------------
def committed_offsets(consumer: ConsumerT) -> Mapping[TP, int]:
    """The offset this consumer last committed, by partition (for the lag gauge)."""
    faust_consumer: Any = consumer
    offsets: Mapping[TP, int] = faust_consumer._committed_offset  # noqa: SLF001  faust-streaming 0.15.3 has no public accessor
    return offsets


def forget_unacked(consumer: ConsumerT, message: Message) -> None:
    """Let Faust stop waiting for `message`'s ack: its graceful stop and rebalances wait (`wait_empty`) for
    every message not yet acked. For a message held on purpose for long (a record in an open analytics window):
    not acked, it is not committed either, and whoever reads the partition next reads it again."""
    faust_consumer: Any = consumer
    faust_consumer._unacked_messages.discard(message)  # noqa: SLF001  a WeakSet; faust-streaming 0.15.3: no API


def aiokafka_producer(producer: ProducerT) -> aiokafka.AIOKafkaProducer:
    """The aiokafka producer inside Faust's (started with the app, flushed and stopped by it): the classify path
    hands records to it directly, skipping Faust's per-record wrapper and `on_produce_message` signal.
    Raises (retriably) while Faust's producer is not started."""
    faust_producer: Any = producer
    return faust_producer._ensure_producer()  # noqa: SLF001  faust-streaming 0.15.3: the started AIOKafkaProducer
