"""The consumer's fetch path reads records whose header names are not UTF-8 (pipeline/kafka_transport.py):
aiokafka's own fetcher classes over record batches built here, no broker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiokafka.consumer import fetcher
from aiokafka.record import default_records
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as driver

from pipeline.kafka_transport import (
    REVOKE_COMMIT_ROUNDS,
    Consumer,
    TolerantPartitionRecords,
    _KeptRecords,
    _LenientRecords,
)

BAD_NAME = b"\xff\xfebad-\xc0\x80"
ESCAPED = "\\xff\\xfebad-\\xc0\\x80"
GZIP = 1


class _RawName(str):
    """A header name whose bytes are not UTF-8 (aiokafka's pure-Python builder calls .encode() on it)."""

    def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
        return BAD_NAME


Headers = list[tuple[str, bytes | None]]


def batch(base_offset: int, records: Sequence[tuple[bytes, Headers]], compression: int = 0) -> bytes:
    """One v2 record batch starting at `base_offset`."""
    builder = default_records._DefaultRecordBatchBuilderPy(  # noqa: SLF001  the builder that can write bad header names
        magic=2,
        compression_type=compression,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i, (value, headers) in enumerate(records):
        builder.append(i, timestamp=1_000, key=b"k", value=value, headers=headers)
    raw = bytearray(builder.build())
    raw[0:8] = base_offset.to_bytes(8, "big")  # the base offset is outside the CRC
    return bytes(raw)


Got = list[tuple[int, bytes | None, Headers]]


def read(data: bytes, fetch_offset: int = 0) -> tuple[Got, TolerantPartitionRecords]:
    records = TolerantPartitionRecords(
        TopicPartition("events", 0),
        _KeptRecords(data),
        None,
        fetch_offset,
        None,
        None,
        True,  # check CRCs, as Faust's consumer does
        0,  # read_uncommitted
    )
    return [(r.offset, r.value, list(r.headers)) for r in records], records


def test_a_bad_header_name_is_escaped_and_nothing_is_skipped_or_repeated() -> None:
    data = (
        batch(0, [(b"v0", []), (b"v1", [])])
        + batch(2, [(b"v2", []), (b"v3", [(_RawName("x"), b"1"), ("ok", b"o")]), (b"v4", [("é", None)])])
        + batch(5, [(b"v5", [(_RawName("y"), None)])])
        + batch(6, [(b"v6", [])])
    )
    got, records = read(data)
    assert got == [
        (0, b"v0", []),
        (1, b"v1", []),
        (2, b"v2", []),  # returned by the C parser before v3 failed: not returned twice
        (3, b"v3", [(ESCAPED, b"1"), ("ok", b"o")]),
        (4, b"v4", [("é", None)]),
        (5, b"v5", [(ESCAPED, None)]),
        (6, b"v6", []),
    ]
    assert records.next_fetch_offset == 7  # the consumer's position moves past all of them
    assert isinstance(records._records, _LenientRecords)  # noqa: SLF001  which parser the transport chose


def test_a_compressed_batch_with_a_bad_header_name() -> None:
    got, _ = read(batch(10, [(b"a", []), (b"b", [(_RawName("x"), b"1")])], compression=GZIP) + batch(12, [(b"c", [])]))
    assert got == [(10, b"a", []), (11, b"b", [(ESCAPED, b"1")]), (12, b"c", [])]


def test_fetch_offset_inside_a_batch_is_respected() -> None:
    """A fetch may start in the middle of a batch: records before the fetch offset are not returned."""
    got, _ = read(batch(0, [(b"v0", []), (b"v1", [(_RawName("x"), b"1")]), (b"v2", [])]), fetch_offset=2)
    assert got == [(2, b"v2", [])]


def test_good_batches_stay_on_aiokafkas_parser() -> None:
    got, records = read(batch(0, [(b"v0", [("name", b"1")])]) + batch(1, [(b"v1", [])]))
    assert got == [(0, b"v0", [("name", b"1")]), (1, b"v1", [])]
    assert isinstance(records._records, _KeptRecords)  # noqa: SLF001  which parser the transport chose; never re-parsed


def test_other_errors_are_not_swallowed() -> None:
    data = bytearray(batch(0, [(b"v0", [])]))
    data[-1] ^= 0xFF  # corrupt the record: the CRC check fails
    with pytest.raises(Exception, match="CRC"):
        read(bytes(data))


def test_install_replaces_aiokafkas_fetcher_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.kafka_transport import install_tolerant_fetch

    monkeypatch.setattr(fetcher, "MemoryRecords", fetcher.MemoryRecords)
    monkeypatch.setattr(fetcher, "PartitionRecords", fetcher.PartitionRecords)
    install_tolerant_fetch()
    assert fetcher.MemoryRecords is _KeptRecords
    assert fetcher.PartitionRecords is TolerantPartitionRecords


# ---- commit before a revoke -----------------------------------------------------------------------------------
class _Revoking:
    """Our Consumer without Faust's machinery: each `commit()` leaves the next acked list of `after_commits` on
    "tp0" (what was acked meanwhile), and Faust's own revoke handler records the acks it finds (and drops)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, after_commits: list[list[int]]) -> None:
        self.commits = 0
        self.dropped: list[dict] = []

        async def faust_revoked(consumer: Consumer, revoked: set) -> None:
            self.dropped.append({tp: list(consumer._acked[tp]) for tp in sorted(revoked)})  # noqa: SLF001  Faust's acked offsets, the state the transport handles

        async def commit() -> bool:
            self.commits += 1
            self.consumer._acked["tp0"] = after_commits[min(self.commits, len(after_commits)) - 1]  # noqa: SLF001  Faust's acked offsets, the state the transport handles
            return True

        monkeypatch.setattr(driver.Consumer, "on_partitions_revoked", faust_revoked)
        self.consumer = Consumer.__new__(Consumer)
        self.consumer._acked = {"tp0": [5], "tp1": [9]}  # noqa: SLF001  Faust's acked offsets, the state the transport handles
        self.consumer.commit = commit  # type: ignore[method-assign]

    def revoke(self, revoked: set[str]) -> None:
        asyncio.run(self.consumer.on_partitions_revoked(revoked))


def test_revoke_commits_again_for_acks_that_arrived_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    r = _Revoking(monkeypatch, [[6], []])  # offset 6 was acked while the first commit ran
    r.revoke({"tp0"})
    assert r.commits == 2
    assert r.dropped == [{"tp0": []}]  # nothing acked is left for Faust to forget


def test_revoke_gives_up_on_acks_behind_a_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    r = _Revoking(monkeypatch, [[7]])  # 7 acked, 6 still in flight: not committable yet
    r.revoke({"tp0"})
    assert r.commits == REVOKE_COMMIT_ROUNDS
    assert r.dropped == [{"tp0": [7]}]


def test_revoke_commits_once_when_nothing_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    r = _Revoking(monkeypatch, [[]])
    r.revoke({"tp0"})  # tp1's acks are not revoked: no reason for another round
    assert r.commits == 1


# ---- a fetch that spans a rebalance ----------------------------------------------------------------------------
class _Fetching:
    """Our Consumer without Faust's machinery: Faust's fetch returns records of "tp0" (committed offset 40),
    "tp1" (nothing committed, earliest 3) and "tp9" (no longer ours), and meanwhile the consumer sees `during`
    ("revoke", "assign" or nothing). Records where it seeks to."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, during: str | None) -> None:
        self.seeks: dict[str, int] = {}
        consumer = self.consumer = Consumer.__new__(Consumer)

        async def faust_rebalanced(*args: object) -> None:
            return None

        async def faust_fetch(_: Consumer, timeout: float) -> tuple[dict, set]:
            if during == "revoke":
                await consumer.on_partitions_revoked({"tp0"})
            elif during == "assign":
                await consumer.on_partitions_assigned({"tp0"}, 2)
            return {"tp0": ["offset 59"], "tp1": ["offset 7"], "tp9": ["offset 1"]}, {"tp0", "tp1"}

        async def earliest(*tps: str) -> dict[str, int]:
            return dict.fromkeys(tps, 3)

        async def seek(tp: str, offset: int) -> None:
            self.seeks[tp] = offset

        monkeypatch.setattr(driver.Consumer, "on_partitions_revoked", faust_rebalanced)
        monkeypatch.setattr(driver.Consumer, "on_partitions_assigned", faust_rebalanced)
        monkeypatch.setattr(driver.Consumer, "_wait_next_records", faust_fetch)
        consumer._acked = {}  # noqa: SLF001  Faust's acked offsets: nothing to commit before the revoke
        consumer._committed_offset = {"tp0": 40, "tp1": None}  # noqa: SLF001  Faust's committed offsets, as the transport reads them
        consumer.commit = lambda: asyncio.sleep(0, True)  # type: ignore[method-assign]
        consumer.assignment = lambda: {"tp0", "tp1"}  # type: ignore[method-assign, assignment]
        consumer.earliest_offsets = earliest  # type: ignore[method-assign, assignment]
        consumer.seek = seek  # type: ignore[method-assign, assignment]

    def fetch(self) -> tuple[object, object]:
        return asyncio.run(self.consumer._wait_next_records(1.0))  # noqa: SLF001  the method the transport overrides


@pytest.mark.parametrize("during", ["revoke", "assign"])
def test_a_batch_fetched_across_a_rebalance_is_dropped_and_read_again(
    monkeypatch: pytest.MonkeyPatch, during: str
) -> None:
    """Handed on, its first record would move Faust's read offset past the re-seek, and Faust would drop the
    records read again from the committed offset (held analytics records lost to the worker that got the
    partition back). Dropped, its partitions still ours go back to their committed offset, else the earliest:
    the batch may have been fetched after the re-seek, and nothing in it may be skipped."""
    f = _Fetching(monkeypatch, during)
    records, active = f.fetch()
    assert records is None and active == {"tp0", "tp1"}
    assert f.seeks == {"tp0": 40, "tp1": 3}


def test_a_batch_fetched_without_a_rebalance_is_handed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    f = _Fetching(monkeypatch, None)
    records, _ = f.fetch()
    assert records == {"tp0": ["offset 59"], "tp1": ["offset 7"], "tp9": ["offset 1"]}
    assert f.seeks == {}


def test_the_versions_whose_privates_we_use_are_pinned() -> None:
    """pipeline/kafka_transport.py relies on private parts of these exact versions. Before moving a pin, re-check
    each `# noqa: SLF001` there and the private classes it subclasses or replaces: aiokafka's
    `AIOKafkaConsumer._fetch_max_wait_ms`, `fetcher.PartitionRecords._unpack_records/_records/_tp`,
    `fetcher.MemoryRecords`, `_MemoryRecordsPy._next_slice/_cache_next`, `_DefaultRecordBatchPy._buffer`;
    Faust's `Consumer._acked`, `Consumer._committed_offset`, `Consumer._unacked_messages`,
    `Consumer._wait_next_records` (overridden: the generation is read after it returns)."""
    from importlib.metadata import version

    pins = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}
    assert {name: version(name) for name in pins} == pins
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    for name, pinned in pins.items():
        assert f'"{name}=={pinned}"' in pyproject, f"pyproject.toml must pin {name}=={pinned}"
