"""The interfaces between the pipeline and its models: agents and loops never see more than this.

A backend implements only what it does:

    Encoder    texts → L2-normalised embeddings      onnx_encoder.py, identity.py, remote.py (the model server)
    Generator  prompts → texts, and what the call did  onnx_generator.py

Both block while the model runs, so the pipeline loads and calls them on a model thread (thread.py), never on
the event loop. What the loops hold are those calls awaited (worker.py):

    Embedder       an Encoder's rows, awaited          analytics/embedder.py (extractive summaries)
    TextGenerator  a Generator's answers, awaited      worker.py GeneratorWorker (abstractive summaries)

`name` and `content_hash` (of the model file) identify a model: they go into every result, so a reader knows
what produced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


class ModelError(Exception):
    """A model could not be loaded or run; the message says what to do."""


@dataclass
class GenerationStats:
    """What one `generate` call did: enough for the planner and a benchmark to report tokens per second."""

    prompts: int = 0
    batches: int = 0
    prompt_tokens: int = 0  # real prompt tokens (no padding)
    new_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0  # every decode step after the prefill
    total_s: float = 0.0  # including tokenization and detokenization

    @property
    def decode_tok_per_s(self) -> float:
        """New tokens after the first of each row (the prefill produces the first) per decode second."""
        steps = self.new_tokens - self.prompts
        return steps / self.decode_s if self.decode_s > 0 else 0.0


@runtime_checkable
class Encoder(Protocol):
    name: str
    content_hash: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised sentence embeddings, shape (len(texts), dim), float32, rows in the order of `texts`."""
        ...


@runtime_checkable
class Generator(Protocol):
    name: str
    content_hash: str
    max_batch: int  # prompts decoded together at most

    def count_tokens(self, prompt: str) -> int:
        """Tokens of `prompt` in the model's chat format (cheap and thread-safe: callable off the model thread).
        ModelError when the model cannot take the prompt."""
        ...

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> tuple[list[str], GenerationStats]:
        """Answers to `prompts` (user messages) in their order, and what the call did."""
        ...


class Embedder(Protocol):
    name: str

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class TextGenerator(Protocol):
    name: str
    max_batch: int

    def count_tokens(self, prompt: str) -> int: ...

    async def generate(self, prompts: Sequence[str], max_new_tokens: int) -> tuple[list[str], GenerationStats]: ...
