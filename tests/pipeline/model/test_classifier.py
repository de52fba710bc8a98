"""pipeline/model/classifier.py: prototypes from the taxonomy, softmax scores, `unknown` below min_confidence.

The model is a tiny fake: a bag of words, each known word on its own axis of a 16-dim space, L2-normalised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from pipeline.config import Label
from pipeline.model.base import Encoder, Generator
from pipeline.model.classifier import UNKNOWN, LabelClassifier, softmax
from pipeline.model.worker import ModelWorker
from pipeline.output.records import ModelInfo

DIM = 16
VOCAB = {
    w: i
    for i, w in enumerate(
        ["charge", "invoice", "payment", "card", "package", "delivery", "courier", "tracking", "crash", "error", "app"]
    )
}


class BagOfWords:
    name = "bag-of-words"
    content_hash = "sha256:fake"

    def __init__(self) -> None:
        self.encoded: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded.append(list(texts))
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().replace(",", " ").replace(".", " ").split():
                if word in VOCAB:
                    out[row, VOCAB[word]] += 1.0
                else:  # unknown words share the last axis, so no text is the zero vector
                    out[row, DIM - 1] += 0.1
        return out / np.linalg.norm(out, axis=1, keepdims=True)


LABELS = {
    "billing": Label(description="charge invoice", examples=["payment card", "card charge"]),
    "shipping": Label(description="package delivery", examples=["courier tracking"]),
    "technical_issue": Label(description="app crash error"),
}


def classifier(min_confidence: float = 0.35, temperature: float = 0.05) -> LabelClassifier:
    return LabelClassifier(BagOfWords(), LABELS, min_confidence=min_confidence, temperature=temperature)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_fake_is_an_encoder() -> None:
    assert isinstance(BagOfWords(), Encoder) and not isinstance(BagOfWords(), Generator)


def test_prototypes_are_normalised_centroids_of_description_and_examples() -> None:
    model = BagOfWords()
    c = LabelClassifier(model, LABELS, min_confidence=0.35, temperature=0.05)
    assert c.names == ["billing", "shipping", "technical_issue"]
    assert c.info == ModelInfo("bag-of-words", "sha256:fake")
    assert c.prototypes.shape == (3, DIM)
    assert c.prototypes.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(c.prototypes, axis=1), 1.0, atol=1e-6)
    # Each label was encoded as [description, *examples].
    assert model.encoded == [
        ["charge invoice", "payment card", "card charge"],
        ["package delivery", "courier tracking"],
        ["app crash error"],
    ]
    for row, texts in zip(c.prototypes, model.encoded, strict=True):
        expected = unit(BagOfWords().encode(texts).mean(axis=0))
        np.testing.assert_allclose(row, expected, atol=1e-6)
    # Zero-shot: a label without examples is its description's embedding.
    np.testing.assert_allclose(c.prototypes[2], BagOfWords().encode(["app crash error"])[0], atol=1e-6)
    # Hand-computed billing centroid: charge (1/√2 + 1/√2), invoice 1/√2, payment 1/√2, card (1/√2 + 1/√2), / 3.
    s = 1 / np.sqrt(2)
    billing = np.zeros(DIM)
    billing[VOCAB["charge"]] = 2 * s
    billing[VOCAB["invoice"]] = s
    billing[VOCAB["payment"]] = s
    billing[VOCAB["card"]] = 2 * s
    np.testing.assert_allclose(c.prototypes[0], unit(billing), atol=1e-6)


def test_classify_picks_the_closest_prototype() -> None:
    c = classifier()
    results = c.classify(["An unexpected charge on my card", "my package, no tracking", "the app shows an error"])
    assert [r.label for r in results] == ["billing", "shipping", "technical_issue"]
    for r in results:
        assert list(r.scores) == c.names
        assert r.score == max(r.scores.values())
        assert r.score == pytest.approx(r.scores[r.label])


def test_scores_are_a_distribution() -> None:
    c = classifier()
    texts = ["charge", "delivery courier", "crash", "nothing known here", "charge package crash"]
    probs = c.score(c.model.encode(texts))
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (probs >= 0).all() and (probs <= 1).all()
    for r in c.classify(texts):
        assert sum(r.scores.values()) == pytest.approx(1.0, abs=1e-6)


def test_scores_are_softmax_of_cosines_over_temperature() -> None:
    c = classifier(temperature=0.5)
    emb = c.model.encode(["charge delivery"])
    cos = emb @ c.prototypes.T
    expected = np.exp(cos / 0.5) / np.exp(cos / 0.5).sum()
    np.testing.assert_allclose(c.score(emb), expected, atol=1e-6)


def test_low_confidence_is_unknown() -> None:
    # An ambiguous text (billing and shipping words) with a soft temperature: the best score is low.
    c = classifier(min_confidence=0.6, temperature=1.0)
    (r,) = c.classify(["charge package"])
    assert r.score < 0.6
    assert r.label == UNKNOWN
    assert set(r.scores) == set(LABELS)  # the scores are still reported
    # The same text at a confident threshold gets its best label.
    (r2,) = classifier(min_confidence=0.0, temperature=1.0).classify(["charge package"])
    assert r2.label in ("billing", "shipping")
    assert r2.score == pytest.approx(r.score)


def test_threshold_is_inclusive() -> None:
    score = classifier(min_confidence=0.0, temperature=1.0).classify(["card charge"])[0].score
    assert 0.4 < score < 0.9
    assert classifier(min_confidence=score, temperature=1.0).classify(["card charge"])[0].label == "billing"
    assert classifier(min_confidence=score + 1e-6, temperature=1.0).classify(["card charge"])[0].label == UNKNOWN


def test_temperature_sharpens() -> None:
    text = ["charge and a bit of delivery"]
    soft = classifier(temperature=1.0).classify(text)[0]
    sharp = classifier(temperature=0.05).classify(text)[0]
    assert soft.label == sharp.label == "billing"
    assert sharp.score > soft.score
    assert sharp.score > 0.8
    assert soft.score < 0.5


def test_softmax_is_stable_for_large_inputs() -> None:
    p = softmax(np.array([[1000.0, 999.0, -1000.0]]), temperature=0.01)
    assert np.isfinite(p).all()
    assert p[0, 0] == pytest.approx(1.0)


def test_needs_two_labels() -> None:
    with pytest.raises(ValueError, match="at least two labels"):
        LabelClassifier(BagOfWords(), {"billing": LABELS["billing"]}, min_confidence=0.3, temperature=0.1)


async def test_model_worker_runs_classify_off_the_loop() -> None:
    worker = ModelWorker(classifier(), name="test-model")
    try:
        results, seconds = await asyncio.wait_for(worker.classify(["charge", "courier"]), 5)
        assert [r.label for r in results] == ["billing", "shipping"]
        assert 0 <= seconds < 5
        thread, _ = await worker.run(lambda: __import__("threading").current_thread().name)
        assert thread.startswith("test-model")
    finally:
        worker.close()


def test_rounded_scores_are_the_scores_rounded_as_the_enriched_record_carries_them() -> None:
    texts = ["An unexpected charge on my card", "my package, no tracking", "the app shows an error", "hello"]
    for r in classifier(temperature=0.3).classify(texts):
        assert r.rounded == {k: round(v, 4) for k, v in r.scores.items()}
        assert list(r.rounded) == list(r.scores)
