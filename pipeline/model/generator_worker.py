"""Runs the generator on its own thread, apart from the classifier's, so classification never waits behind a
summary (pipeline/model/worker.py is the same pattern for the classifier).

The thread runs at a lower CPU priority (`nice`, Linux: a thread's own nice value): on a small machine a long
generation then takes only the CPU the classifier leaves, instead of pushing classification past its deadlines.
The model is loaded on that thread, so onnxruntime's own threads (threads > 1) inherit the priority.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import structlog

from pipeline.model.onnx_generator import GenerationStats, OnnxGenerator

log = structlog.get_logger(__name__)


def _lower_priority(nice: int) -> None:
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:  # on Linux PRIO_PROCESS with a thread id sets that thread's nice value
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:  # not allowed here: run at normal priority
        log.warning("generator_priority_unchanged", error=str(exc))


class GeneratorWorker:
    def __init__(self, name: str = "generator", *, nice: int = 10) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name, initializer=_lower_priority, initargs=(nice,)
        )
        self.generator: OnnxGenerator | None = None
        self.name = ""
        self.max_batch = 1

    async def load(self, load: Callable[[], OnnxGenerator]) -> GeneratorWorker:
        """Load the generator on this worker's thread."""
        self.generator = await asyncio.get_running_loop().run_in_executor(self._pool, load)
        self.name = self.generator.name
        self.max_batch = self.generator.max_batch
        return self

    def count_tokens(self, prompt: str) -> int:
        """Prompt tokens in the chat format (tokenizers is thread-safe; call it off the event loop)."""
        assert self.generator is not None
        return len(self.generator.tokenize([prompt])[0])

    async def run(self, fn: Callable[[], object]) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def generate(self, prompts: Sequence[str], max_new_tokens: int) -> tuple[list[str], GenerationStats]:
        generator = self.generator
        assert generator is not None

        def run() -> tuple[list[str], GenerationStats]:
            texts = generator.generate(list(prompts), max_new_tokens)
            return texts, generator.last_stats

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
