"""Runs model calls on one dedicated thread, so the event loop never blocks on the model.

One thread, not a pool: onnxruntime already uses its intra-op threads for one call, and calls in parallel
would only fight over the same cores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pipeline.model.classifier import LabelClassifier
from pipeline.output.records import Classification

R = TypeVar("R")


class ModelWorker:
    def __init__(self, classifier: LabelClassifier, name: str = "model") -> None:
        self.classifier = classifier
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[[], R]) -> tuple[R, float]:
        """Run `fn` on the model thread; return its result and the seconds it took there."""

        def timed() -> tuple[R, float]:
            t0 = time.perf_counter()
            result = fn()
            return result, time.perf_counter() - t0

        return await asyncio.get_running_loop().run_in_executor(self._pool, timed)

    async def classify(self, texts: Sequence[str]) -> tuple[list[Classification], float]:
        return await self.run(lambda: self.classifier.classify(texts))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
