"""Which input offsets may be committed: per partition, the contiguous prefix of read records that are done.

Pure bookkeeping, no I/O: the reader (pipeline/ingest/reader.py) records each fetched offset with `read`, the
scheduler reports records done once the broker holds their results (`done`), and the reader commits what
`advanced()` returns. A record finished out of order (a late event deferred, a rejected one sent to the DLQ
while earlier events wait for the model) holds nothing back but is not committed until every record read
before it on its partition is done too: a crash replays everything after the commit point, never skips.

Cost: an append per record read, a set insert and a pop per record done.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

TP = TypeVar("TP")  # a topic-partition: aiokafka's TopicPartition in the worker, anything hashable in tests


class _Partition:
    __slots__ = ("reading", "finished", "commit_at", "committed")

    def __init__(self) -> None:
        self.reading: deque[int] = deque()  # offsets read and not yet done, in the order read
        self.finished: set[int] = set()  # done, but behind an earlier record still reading
        self.commit_at: int | None = None  # the next offset to read after a restart: first not done
        self.committed: int | None = None  # what was last committed (or handed to commit)


class AckedOffsets(Generic[TP]):
    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}

    def assign(self, tps: Iterable[TP]) -> None:
        """Start tracking `tps` (a fresh assignment: nothing read yet)."""
        for tp in tps:
            self._parts.setdefault(tp, _Partition())

    def forget(self, tps: Iterable[TP]) -> None:
        """Stop tracking `tps` (revoked): later reports of their records are ignored."""
        for tp in tps:
            self._parts.pop(tp, None)

    def read(self, tp: TP, offsets: Iterable[int]) -> bool:
        """Record offsets fetched from `tp`, in order; False (nothing recorded) when `tp` is not assigned."""
        part = self._parts.get(tp)
        if part is None:
            return False
        part.reading.extend(offsets)
        return True

    def done(self, positions: Iterable[tuple[TP, int]]) -> None:
        """Records whose results the broker holds (or that need none): they may be committed once every
        record read before them on their partition is done too."""
        touched: set[_Partition] = set()
        parts = self._parts
        for tp, offset in positions:
            part = parts.get(tp)
            if part is not None:
                part.finished.add(offset)
                touched.add(part)
        for part in touched:
            reading, finished = part.reading, part.finished
            last = None
            while reading and reading[0] in finished:
                last = reading.popleft()
                finished.discard(last)
            if last is not None:
                part.commit_at = last + 1

    def held(self, tp: TP) -> int:
        """Records of `tp` read and not yet committable."""
        part = self._parts.get(tp)
        return 0 if part is None else len(part.reading)

    def advanced(self, tps: Iterable[TP] | None = None) -> dict[TP, int]:
        """The commit point of each partition (of `tps`, default all) that moved since the last `committed()`."""
        parts = self._parts if tps is None else {tp: self._parts[tp] for tp in tps if tp in self._parts}
        return {
            tp: p.commit_at
            for tp, p in parts.items()
            if p.commit_at is not None and (p.committed is None or p.commit_at > p.committed)
        }

    def committed(self, offsets: Mapping[TP, int]) -> None:
        """The broker took these commit points."""
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None and (part.committed is None or offset > part.committed):
                part.committed = offset

    def last_committed(self, tp: TP) -> int | None:
        part = self._parts.get(tp)
        return None if part is None else part.committed
