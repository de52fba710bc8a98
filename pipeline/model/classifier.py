"""Labels from the taxonomy → prototype embeddings → a label and scores for each text.

Zero-shot: a label's prototype is the embedding of its description. Few-shot: when the label has examples,
the prototype is the normalised centroid of the description and the examples (the examples carry most of
the signal: measured here, centroids beat bare descriptions by a wide margin).

Learned (pipeline/learning): analysts' feedback adds labels (a prototype from the description given once) and
trains a head on the encoder's embeddings, blended with the prototypes' scores. Both live in one immutable
`Taxonomy`, swapped whole by `swap()` (from the event loop, between batches): `classify` reads it once per call,
so a batch is labeled wholly by one taxonomy and each result names its head version. With no feedback the
taxonomy is the configured labels' prototypes and no head: the scores are exactly the zero-shot ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

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


class Head(Protocol):
    """A learned head (pipeline/learning/head.py): probabilities over `labels` from the embeddings and the
    prototypes' zero-shot probabilities (blended while a label has few examples)."""

    @property
    def labels(self) -> list[str]: ...
    def scores(self, embeddings: np.ndarray, prototype_scores: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Taxonomy:
    """What labels a batch: the label names, one prototype per name, the learned head (None: zero-shot only)
    and the head's version (None with no head and no label added through feedback)."""

    names: list[str]
    prototypes: np.ndarray  # (labels, dim) float32, unit rows
    head: Head | None = None
    version: str | None = None


def unit_rows(vecs: np.ndarray) -> np.ndarray:
    norms = np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    out: np.ndarray = (vecs / norms).astype(np.float32)
    return out


class LabelClassifier:
    def __init__(
        self, model: Encoder, labels: Mapping[str, Label], *, min_confidence: float, temperature: float
    ) -> None:
        if len(labels) < 2:
            raise ValueError("a classifier needs at least two labels")
        self.model = model
        self.info = ModelInfo(model.name, model.content_hash)
        self.min_confidence = min_confidence
        self.temperature = temperature
        self.configured = Taxonomy(list(labels), self._prototypes(labels))
        self.taxonomy = self.configured  # replaced whole by swap()

    @property
    def names(self) -> list[str]:
        return self.taxonomy.names

    @property
    def prototypes(self) -> np.ndarray:
        return self.taxonomy.prototypes

    def _prototypes(self, labels: Mapping[str, Label]) -> np.ndarray:
        rows = []
        for label in labels.values():
            vecs = self.model.encode([label.description, *label.examples])
            centroid = vecs.mean(axis=0)
            rows.append(centroid / max(float(np.linalg.norm(centroid)), 1e-12))
        return np.stack(rows).astype(np.float32)

    def with_labels(self, added: Mapping[str, str]) -> tuple[list[str], np.ndarray]:
        """The configured labels plus `added` (name → description, in the given order): names and prototypes.
        Encodes the new descriptions: call it on the model thread."""
        base = self.configured
        new = [n for n in added if n not in base.names]
        if not new:
            return list(base.names), base.prototypes
        rows = unit_rows(self.model.encode([added[n] for n in new]))
        return [*base.names, *new], np.concatenate([base.prototypes, rows]).astype(np.float32)

    def swap(self, taxonomy: Taxonomy) -> None:
        """Use `taxonomy` from the next batch on (one attribute assignment: a batch in flight keeps its own)."""
        if taxonomy.head is not None and list(taxonomy.head.labels) != taxonomy.names:
            raise ValueError(f"the head's labels {taxonomy.head.labels} are not the taxonomy's {taxonomy.names}")
        self.taxonomy = taxonomy

    def score(self, embeddings: np.ndarray, taxonomy: Taxonomy | None = None) -> np.ndarray:
        """Probabilities over labels, shape (n, labels): the prototypes' softmax, through the head if any."""
        t = self.taxonomy if taxonomy is None else taxonomy
        probs = softmax(embeddings @ t.prototypes.T, self.temperature)
        if t.head is not None:
            probs = t.head.scores(embeddings, probs)
        return probs

    def classify(
        self, texts: Sequence[str], langs: Sequence[str] | None = None, supported: Sequence[bool] | None = None
    ) -> list[Classification]:
        """A label, its score and every label's score per text; the scores also rounded as the enriched record
        carries them. The batch goes through numpy at once: per text only a few dicts are built.

        `langs` / `supported` (from the router, pipeline/model/router.py): each text's language and whether this
        encoder reads it, carried into its Classification with this encoder's identity."""
        taxonomy = self.taxonomy  # once: the whole batch is labeled by one taxonomy
        probs = self.score(self.model.encode(texts), taxonomy)
        if langs is not None:
            return self._with_langs(probs, taxonomy, langs, supported or [True] * len(langs))
        names, floor, version = taxonomy.names, self.min_confidence, taxonomy.version
        best = probs.argmax(axis=1).tolist()
        rows = probs.tolist()  # Python floats, as float() of each element
        rounded = round_rows(probs)
        out = []
        for row, b, r in zip(rows, best, rounded, strict=True):
            score = row[b]
            label = names[b] if score >= floor else UNKNOWN
            out.append(
                Classification(
                    label, score, dict(zip(names, row, strict=True)), dict(zip(names, r, strict=True)), version
                )
            )
        return out

    def _with_langs(
        self, probs: np.ndarray, taxonomy: Taxonomy, langs: Sequence[str], supported: Sequence[bool]
    ) -> list[Classification]:
        names, floor, info, version = taxonomy.names, self.min_confidence, self.info, taxonomy.version
        best = probs.argmax(axis=1).tolist()
        rounded = round_rows(probs)
        out = []
        for row, b, r, lang, ok in zip(probs.tolist(), best, rounded, langs, supported, strict=True):
            score = row[b]
            label = names[b] if score >= floor else UNKNOWN
            scores, rounded_scores = dict(zip(names, row, strict=True)), dict(zip(names, r, strict=True))
            out.append(
                Classification(label, score, scores, rounded_scores, version, lang=lang, lang_supported=ok, model=info)
            )
        return out
