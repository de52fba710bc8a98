"""Embeddings for extractive summaries from the classifier's own encoder, on the classifier's model thread.

The texts go in chunks of `chunk` (the encoder's sub-batch), each its own call on that thread: a classification
batch queued meanwhile waits for at most one chunk, not for the whole window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.model.worker import ModelWorker


class ClassifierEmbedder:
    def __init__(self, worker: ModelWorker, chunk: int = 8) -> None:
        self.worker = worker
        self.name = worker.classifier.info.name
        self.chunk = max(1, chunk)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self.worker.classifier.model
        parts = []
        for start in range(0, len(texts), self.chunk):
            part = list(texts[start : start + self.chunk])
            rows, _ = await self.worker.run(lambda part=part: model.encode(part))
            parts.append(rows)
        return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
