"""What the loops await: a model's calls on its own model thread (thread.py).

    ModelWorker      a LabelClassifier (over any Encoder: in process or the model server), or a RoutedClassifier
                     (language ID, then one per language: router.py), on its thread:
                     `classify(texts) -> (results, seconds on the thread)` for the batch scheduler
    GeneratorWorker  a Generator loaded and run on its own lower-priority thread: a TextGenerator for the
                     analytics runner

`close()` stops the thread without blocking (the call in flight finishes); `aclose()` also waits for it to end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from pipeline.model.base import GenerationStats, Generator
from pipeline.model.classifier import LabelClassifier
from pipeline.model.router import RoutedClassifier
from pipeline.model.thread import ModelThread
from pipeline.output.records import Classification

R = TypeVar("R")


class ModelWorker:
    def __init__(self, classifier: LabelClassifier | RoutedClassifier, name: str = "model") -> None:
        self.classifier = classifier
        self.thread = ModelThread(name)

    @property
    def learnable(self) -> LabelClassifier:
        """The classifier a learned head is trained for and swapped into: with routing by language, the default
        encoder's (a head is tied to one encoder's embeddings; the other routes stay zero-shot)."""
        c = self.classifier
        return c.primary if isinstance(c, RoutedClassifier) else c

    async def run(self, fn: Callable[[], R]) -> tuple[R, float]:
        """Run `fn` on the model thread; return its result and the seconds it took there."""
        return await self.thread.timed(fn)

    async def classify(self, texts: Sequence[str]) -> tuple[list[Classification], float]:
        return await self.thread.timed(lambda: self.classifier.classify(texts))

    def close(self) -> None:
        self.thread.close()

    async def aclose(self) -> None:
        await self.thread.aclose()


class GeneratorWorker:
    def __init__(self, name: str = "generator", *, nice: int = 10) -> None:
        self.thread = ModelThread(name, nice=nice)
        self.generator: Generator | None = None
        self.name = ""
        self.max_batch = 1

    async def load(self, load: Callable[[], Generator]) -> GeneratorWorker:
        """Load the generator on this worker's thread (its onnxruntime threads inherit the thread's priority)."""
        self.generator = await self.thread.call(load)
        self.name = self.generator.name
        self.max_batch = self.generator.max_batch
        return self

    def count_tokens(self, prompt: str) -> int:
        """Prompt tokens in the chat format (the tokenizer is thread-safe: called on the loop's thread)."""
        assert self.generator is not None, "load() first"
        return self.generator.count_tokens(prompt)

    async def generate(self, prompts: Sequence[str], max_new_tokens: int) -> tuple[list[str], GenerationStats]:
        generator = self.generator
        assert generator is not None, "load() first"
        return await self.thread.call(lambda: generator.generate(list(prompts), max_new_tokens))

    def close(self) -> None:
        self.thread.close()

    async def aclose(self) -> None:
        await self.thread.aclose()
