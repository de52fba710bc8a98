"""A micro-batcher that closes each batch in time for its events' deadlines.

Pure data structure, no I/O and no clock of its own: the caller passes `now`, so tests drive it with a fake
clock. A batch closes when
  1. it is full (`max_batch`), or
  2. waiting longer would make its earliest deadline miss, given the service time measured for a batch of
     that size (plus a margin for delivering the result), or
  3. its oldest event has waited `max_wait_s` (bounds latency when the deadline leaves lots of slack).
Events that cannot make their deadline even if the batch starts now come back as `late`, and the caller
applies the late policy to them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pipeline.batching.service_time import ServiceEstimate

T = TypeVar("T")


@dataclass(slots=True)
class Pending(Generic[T]):
    item: T
    deadline: float  # seconds, same clock as `now`
    arrived: float


@dataclass(slots=True)
class Batch(Generic[T]):
    on_time: list[Pending[T]] = field(default_factory=list)
    late: list[Pending[T]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.on_time) + len(self.late)


class DeadlineBatcher(Generic[T]):
    def __init__(self, max_batch: int, max_wait_s: float, service_time: ServiceEstimate, margin_s: float = 0.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.margin_s = margin_s
        self.service_time = service_time
        self._queue: deque[Pending[T]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, item: T, deadline: float, now: float) -> None:
        self._queue.append(Pending(item, deadline, now))

    def _head(self) -> list[Pending[T]]:
        n = min(len(self._queue), self.max_batch)
        return [self._queue[i] for i in range(n)]

    def due_at(self) -> float | None:
        """The latest moment the next batch may start; None when nothing waits."""
        queue = self._queue
        if not queue:
            return None
        if len(queue) >= self.max_batch:
            return queue[0].arrived  # full: due already (asked once or twice per batch: no list of the head)
        earliest = min(p.deadline for p in queue)  # the whole queue is the head: shorter than max_batch
        latest_start = earliest - self.service_time.estimate(len(queue)) - self.margin_s
        return min(latest_start, queue[0].arrived + self.max_wait_s)

    def ready(self, now: float) -> bool:
        due = self.due_at()
        return due is not None and now >= due

    def take(self, now: float) -> Batch[T]:
        """Pop the next batch (up to max_batch, oldest first) and split it into on-time and late events."""
        n = min(len(self._queue), self.max_batch)
        finish = now + self.service_time.estimate(n) + self.margin_s
        batch: Batch[T] = Batch()
        for _ in range(n):
            p = self._queue.popleft()
            (batch.on_time if p.deadline >= finish else batch.late).append(p)
        return batch
