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
import atexit
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any, TypeVar

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
    """A thread of its own with a plain queue, not a ThreadPoolExecutor: a call costs one queue put and one
    `call_soon_threadsafe` back (the executor's futures, conditions and semaphore cost about twice the CPU,
    paid once per model batch)."""

    def __init__(self, name: str = "model", *, nice: int = 0) -> None:
        self.name = name
        self._nice = nice
        self._thread: threading.Thread | None = None  # started with the first call
        self._queue: SimpleQueue[_Call[Any] | None] = SimpleQueue()
        self._closed = False

    async def call(self, fn: Callable[[], R]) -> R:
        """`fn()` run on this thread; RuntimeError once closed."""
        if self._closed:
            raise RuntimeError(f"model thread {self.name} is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"{self.name}_0", daemon=True)
            self._thread.start()
            atexit.register(_close_at_exit, weakref.ref(self))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put((loop, future, fn))
        return await future

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
        self._closed = True
        while True:
            try:
                call = self._queue.get_nowait()
            except Empty:
                break
            if call is not None:
                _post(call[0], _cancel, call[1])
        self._queue.put(None)  # the thread's signal to end

    def close_and_join(self) -> None:
        """`close()`, then block until the thread has ended (interpreter exit; never on the loop)."""
        self.close()
        if self._thread is not None:
            self._thread.join()

    async def aclose(self) -> None:
        """`close()`, then wait off the loop until the thread has ended."""
        self.close()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def _run(self) -> None:
        lower_priority(self._nice)
        queue = self._queue
        while True:
            call = queue.get()
            if call is None:
                return
            loop, future, fn = call
            if self._closed:  # taken while close() emptied the queue: cancelled as the others
                _post(loop, _cancel, future)
                continue
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001  handed to the caller, as an executor does
                _post(loop, _fail, future, exc)
            else:
                _post(loop, _succeed, future, result)
            del call, future, fn  # not kept alive until the next call


_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[R]", Callable[[], R]]


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for the answer
        loop.call_soon_threadsafe(callback, *args)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _cancel(future: asyncio.Future[Any]) -> None:
    future.cancel()


def _close_at_exit(ref: weakref.ref[ModelThread]) -> None:
    """At interpreter exit, as an executor's threads: no more calls, and the call in flight finishes first."""
    thread = ref()
    if thread is not None:
        thread.close_and_join()
