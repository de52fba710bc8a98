"""Embeddings for extractive summaries from the classifier's own encoder, on the classifier's model thread.

The texts go in chunks of `chunk` (the encoder's sub-batch), each its own call on that thread: a classification
batch queued meanwhile waits for at most one chunk, not for the whole window. An `Embedder` (model/base.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from pipeline.model.worker import ModelWorker


class ClassifierEmbedder:
    def __init__(self, worker: ModelWorker, chunk: int = 8) -> None:
        self.worker = worker
        self.name = worker.classifier.info.name
        self.chunk = max(1, chunk)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        encoder = self.worker.classifier.model
        parts = []
        for start in range(0, len(texts), self.chunk):
            part = list(texts[start : start + self.chunk])
            parts.append(await self.worker.thread.call(partial(encoder.encode, part)))
        return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
