"""pipeline/model/classifier.py's taxonomy swap: a batch is labeled wholly by the taxonomy it started with, even
when a swap lands while the model encodes it; the next batch uses the new one; a head must cover the labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from pipeline.model.classifier import LabelClassifier, Taxonomy
from tests.pipeline.model.test_classifier import LABELS, BagOfWords

TEXTS = ["an unexpected charge on my card", "my package, no tracking", "the app shows an error"]


class FlatHead:
    """Every label equally likely: easy to tell apart from the prototypes' scores."""

    def __init__(self, labels: Sequence[str]) -> None:
        self._labels = list(labels)

    @property
    def labels(self) -> list[str]:
        return self._labels

    def scores(self, embeddings: np.ndarray, prototype_scores: np.ndarray) -> np.ndarray:
        return np.full_like(prototype_scores, 1.0 / prototype_scores.shape[1])


class SwapWhileEncoding(BagOfWords):
    def __init__(self) -> None:
        super().__init__()
        self.on_encode: list = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        for hook in self.on_encode:
            hook()
        return super().encode(texts)


def test_a_swap_during_a_batch_applies_from_the_next_batch() -> None:
    model = SwapWhileEncoding()
    c = LabelClassifier(model, LABELS, min_confidence=0.0, temperature=0.05)
    before = c.classify(TEXTS)
    new = Taxonomy(c.names, c.prototypes, FlatHead(c.names), "head-9-0123456789")
    model.on_encode.append(lambda: c.swap(new))
    during = c.classify(TEXTS)
    model.on_encode.clear()
    assert during == before and all(r.head is None for r in during)  # the whole batch: the old taxonomy
    after = c.classify(TEXTS)
    assert all(r.head == "head-9-0123456789" for r in after)
    assert all(r.scores == pytest.approx(dict.fromkeys(c.names, 1.0 / 3)) for r in after)


def test_a_head_for_other_labels_is_refused() -> None:
    c = LabelClassifier(BagOfWords(), LABELS, min_confidence=0.0, temperature=0.05)
    with pytest.raises(ValueError, match="labels"):
        c.swap(Taxonomy(c.names, c.prototypes, FlatHead(["billing", "shipping"]), "head-1-x"))
