"""The identity "model": `model.encoder: identity` runs the whole worker path minus inference.

It answers every text with the same unit vector, without tokenizing or computing anything, so every label
scores the same and the result is `unknown`. Used to measure what the pipeline itself (Kafka → Faust →
Kafka, validation, batching, records) can carry: `slmstream bench identity`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IDENTITY = "identity"


class IdentityEncoder:
    """An `Encoder` that costs one array allocation per batch."""

    name = IDENTITY
    content_hash = "sha256:identity"
    provider = "none"

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self._unit = np.zeros(dim, dtype=np.float32)
        self._unit[0] = 1.0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.broadcast_to(self._unit, (len(texts), self.dim))
