"""pipeline/model/thread.py and worker.py: each model's calls on its own thread (the generator's at a lower
CPU priority), and close() really ends those threads."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from pipeline.model.base import GenerationStats, Generator
from pipeline.model.thread import ModelThread
from pipeline.model.worker import GeneratorWorker, ModelWorker
from tests.pipeline.model.test_classifier import classifier


class FakeGenerator:
    name = "fake"
    content_hash = "sha256:fake"
    max_batch = 4

    def __init__(self) -> None:
        self.threads: list[int] = []

    def count_tokens(self, prompt: str) -> int:
        return len(prompt.split())

    def generate(self, prompts, max_new_tokens):
        self.threads.append(threading.get_ident())
        return [p.upper() for p in prompts], GenerationStats(prompts=len(prompts), new_tokens=3)


def thread_names() -> set[str]:
    return {t.name for t in threading.enumerate()}


async def test_calls_run_one_at_a_time_on_one_thread_off_the_loop() -> None:
    thread = ModelThread("test-one")
    try:
        idents = await asyncio.gather(*(thread.call(threading.get_ident) for _ in range(5)))
        assert len(set(idents)) == 1 and idents[0] != threading.get_ident()
        value, seconds = await thread.timed(lambda: 42)
        assert value == 42 and 0 <= seconds < 5
    finally:
        await thread.aclose()


async def test_aclose_ends_the_thread_and_refuses_more_calls() -> None:
    thread = ModelThread("test-close")
    name = await thread.call(lambda: threading.current_thread().name)
    assert name.startswith("test-close") and thread.alive and name in thread_names()
    await thread.aclose()
    assert not thread.alive and name not in thread_names()
    with pytest.raises(RuntimeError):
        await thread.call(lambda: None)


async def test_close_lets_the_call_in_flight_finish_and_cancels_the_queued_ones() -> None:
    thread = ModelThread("test-queue")
    entered, release = threading.Event(), threading.Event()

    def blocking() -> str:
        entered.set()
        assert release.wait(10)
        return "done"

    in_flight = asyncio.ensure_future(thread.call(blocking))
    assert await asyncio.to_thread(entered.wait, 10)
    queued = asyncio.ensure_future(thread.call(lambda: "never"))
    await asyncio.sleep(0)  # let the queued call reach the thread's queue
    thread.close()  # does not block the loop, although a call is in flight
    release.set()
    assert await in_flight == "done"
    with pytest.raises(asyncio.CancelledError):
        await queued
    await thread.aclose()
    assert not thread.alive


async def test_model_worker_close_ends_its_thread() -> None:
    worker = ModelWorker(classifier(), name="test-classify")
    results, _ = await worker.classify(["charge"])
    assert results[0].label == "billing" and worker.thread.alive
    await worker.aclose()
    assert not worker.thread.alive
    assert not any(n.startswith("test-classify") for n in thread_names())


async def test_generator_loads_and_generates_on_its_own_lower_priority_thread() -> None:
    fake = FakeGenerator()
    assert isinstance(fake, Generator)
    loaded_on: list[int] = []

    def load() -> FakeGenerator:
        loaded_on.append(threading.get_ident())
        return fake

    worker = await GeneratorWorker(nice=5).load(load)
    try:
        assert (worker.name, worker.max_batch) == ("fake", 4)
        texts, stats = await worker.generate(["a b", "c"], 8)
        assert texts == ["A B", "C"] and stats.prompts == 2 and stats.new_tokens == 3
        assert fake.threads == loaded_on and loaded_on[0] != threading.get_ident()
        here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        there = await worker.thread.call(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        assert there == min(19, here + 5)
        assert worker.count_tokens("one two three") == 3
    finally:
        await worker.aclose()
    assert not worker.thread.alive
