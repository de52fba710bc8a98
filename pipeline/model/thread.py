"""One dedicated thread for a model's calls, so the event loop never blocks on the model.

One thread, not a pool: onnxruntime already uses its intra-op threads for one call, and calls in parallel would
only fight over the same cores. The classifier and the generator each get their own, so classification never
waits behind a summary.

`nice` (Linux: a thread's own nice value) lowers the thread's CPU priority: on a small machine a long generation
then takes only the CPU the classifier leaves, instead of pushing classification past its deadlines. Load the
model with `call(load)` on that thread, so onnxruntime's own threads inherit the priority.

`close()` takes no more calls, cancels the queued ones and lets the thread end after the call in flight;
`aclose()` also waits (off the loop) until it has ended.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)

R = TypeVar("R")


def lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value by `nice` (up to 19); a warning where that is not allowed."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:  # on Linux PRIO_PROCESS with a thread id sets that thread's nice value
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:  # not allowed here: run at normal priority
        log.warning("model_thread_priority_unchanged", error=str(exc))


class ModelThread:
    def __init__(self, name: str = "model", *, nice: int = 0) -> None:
        self.name = name
        self._thread: threading.Thread | None = None  # started with the first call
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name, initializer=self._started, initargs=(nice,)
        )

    def _started(self, nice: int) -> None:
        self._thread = threading.current_thread()
        lower_priority(nice)

    async def call(self, fn: Callable[[], R]) -> R:
        """`fn()` run on this thread; RuntimeError once closed."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def timed(self, fn: Callable[[], R]) -> tuple[R, float]:
        """`fn()` run on this thread, and the seconds it took there (queueing excluded)."""

        def timed() -> tuple[R, float]:
            t0 = time.perf_counter()
            result = fn()
            return result, time.perf_counter() - t0

        return await self.call(timed)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """No more calls; queued ones are cancelled; the thread ends after the call in flight. Never blocks."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """`close()`, then wait off the loop until the thread has ended."""
        self.close()
        await asyncio.to_thread(self._pool.shutdown, wait=True)  # joins the thread
