"""The generator's thread: its own, at a lower CPU priority, returning texts and the generator's stats."""

from __future__ import annotations

import asyncio
import os
import threading

from pipeline.model.generator_worker import GeneratorWorker
from pipeline.model.onnx_generator import GenerationStats


class FakeGenerator:
    name = "fake"
    max_batch = 4

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.last_stats = GenerationStats()

    def tokenize(self, prompts, system=None):
        return [p.split() for p in prompts]

    def generate(self, prompts, max_new_tokens):
        self.threads.append(threading.get_ident())
        self.last_stats = GenerationStats(prompts=len(prompts), new_tokens=3)
        return [p.upper() for p in prompts]


def test_generates_on_its_own_lower_priority_thread() -> None:
    async def main() -> None:
        fake = FakeGenerator()
        worker = await GeneratorWorker(nice=5).load(lambda: fake)
        assert (worker.name, worker.max_batch) == ("fake", 4)
        texts, stats = await worker.generate(["a b", "c"], 8)
        assert texts == ["A B", "C"] and stats.prompts == 2 and stats.new_tokens == 3
        assert fake.threads[0] != threading.get_ident()
        here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        there = await worker.run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        assert there == min(19, here + 5)
        assert worker.count_tokens("one two three") == 3
        worker.close()

    asyncio.run(main())
