"""Labels from the taxonomy → prototype embeddings → a label and scores for each text.

Zero-shot: a label's prototype is the embedding of its description. Few-shot: when the label has examples,
the prototype is the normalised centroid of the description and the examples (the examples carry most of
the signal: measured here, centroids beat bare descriptions by a wide margin).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pipeline.config import Label
from pipeline.model.base import Encoder
from pipeline.output.records import Classification, ModelInfo, round_rows

UNKNOWN = "unknown"


def softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = x / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probs


class LabelClassifier:
    def __init__(
        self, model: Encoder, labels: Mapping[str, Label], *, min_confidence: float, temperature: float
    ) -> None:
        if len(labels) < 2:
            raise ValueError("a classifier needs at least two labels")
        self.model = model
        self.info = ModelInfo(model.name, model.content_hash)
        self.names = list(labels)
        self.min_confidence = min_confidence
        self.temperature = temperature
        self.prototypes = self._prototypes(labels)

    def _prototypes(self, labels: Mapping[str, Label]) -> np.ndarray:
        rows = []
        for label in labels.values():
            vecs = self.model.encode([label.description, *label.examples])
            centroid = vecs.mean(axis=0)
            rows.append(centroid / max(float(np.linalg.norm(centroid)), 1e-12))
        return np.stack(rows).astype(np.float32)

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Probabilities over labels, shape (n, labels)."""
        return softmax(embeddings @ self.prototypes.T, self.temperature)

    def classify(
        self, texts: Sequence[str], langs: Sequence[str] | None = None, supported: Sequence[bool] | None = None
    ) -> list[Classification]:
        """A label, its score and every label's score per text; the scores also rounded as the enriched record
        carries them. The batch goes through numpy at once: per text only a few dicts are built.

        `langs` / `supported` (from the router, pipeline/model/router.py): each text's language and whether this
        encoder reads it, carried into its Classification with this encoder's identity."""
        probs = self.score(self.model.encode(texts))
        if langs is not None:
            return self._with_langs(probs, langs, supported or [True] * len(langs))
        names, floor = self.names, self.min_confidence
        best = probs.argmax(axis=1).tolist()
        rows = probs.tolist()  # Python floats, as float() of each element
        rounded = round_rows(probs)
        out = []
        for row, b, r in zip(rows, best, rounded, strict=True):
            score = row[b]
            label = names[b] if score >= floor else UNKNOWN
            out.append(
                Classification(label, score, dict(zip(names, row, strict=True)), dict(zip(names, r, strict=True)))
            )
        return out

    def _with_langs(self, probs: np.ndarray, langs: Sequence[str], supported: Sequence[bool]) -> list[Classification]:
        names, floor, info = self.names, self.min_confidence, self.info
        best = probs.argmax(axis=1).tolist()
        rounded = round_rows(probs)
        out = []
        for row, b, r, lang, ok in zip(probs.tolist(), best, rounded, langs, supported, strict=True):
            score = row[b]
            label = names[b] if score >= floor else UNKNOWN
            scores, rounded_scores = dict(zip(names, row, strict=True)), dict(zip(names, r, strict=True))
            out.append(Classification(label, score, scores, rounded_scores, lang=lang, lang_supported=ok, model=info))
        return out
