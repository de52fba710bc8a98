"""The interface between the pipeline and a model: agents never see more than this.

A backend (onnxruntime on CPU or GPU in this process, or a client of an out-of-process model server)
implements `SmallModel`; swapping one for another touches no agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


class ModelError(Exception):
    """A model could not be loaded or run; the message says what to do."""


@runtime_checkable
class SmallModel(Protocol):
    name: str
    content_hash: str  # of the model file: goes into every result so a reader knows what produced it

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised sentence embeddings, shape (len(texts), dim), float32."""
        ...

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        """Text continuations (generative models only)."""
        ...
