"""pipeline/model/router.py: each text to an encoder that reads its language (fake language ID, fake encoders,
fake clock)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from pipeline.config import Label
from pipeline.model.classifier import LabelClassifier
from pipeline.model.router import Route, RoutedClassifier, RoutedResults

LABELS = {
    "billing": Label(description="billing charge"),
    "shipping": Label(description="shipping parcel"),
}


class PrefixLanguageId:
    """The language is the text's first word: `de: ...` is German."""

    name = "prefix"

    def detect(self, texts: Sequence[str]) -> list[str]:
        return [t.split(":", 1)[0] for t in texts]


class KeywordEncoder:
    """A 2-d embedding: billing if the text mentions a charge, else shipping; records every batch it ran."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.content_hash = f"sha256:{name}"
        self.batches: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        rows = [[1.0, 0.0] if ("charge" in t or "Abbuchung" in t) else [0.0, 1.0] for t in texts]
        return np.asarray(rows, dtype=np.float32)


class StepClock:
    """Each call is 0.5 s later than the one before."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.5
        return self.t


def classifier(encoder: KeywordEncoder) -> LabelClassifier:
    return LabelClassifier(encoder, LABELS, min_confidence=0.0, temperature=0.05)


@pytest.fixture
def english() -> KeywordEncoder:
    return KeywordEncoder("english")


@pytest.fixture
def multi() -> KeywordEncoder:
    return KeywordEncoder("multi")


def router(english: KeywordEncoder, multi: KeywordEncoder | None) -> RoutedClassifier:
    routes = [Route(classifier(english), frozenset({"en"}))]
    if multi is not None:
        routes.append(Route(classifier(multi), frozenset({"en", "de", "ru"})))
    routed = RoutedClassifier(PrefixLanguageId(), routes, clock=StepClock())
    for encoder in (english, multi):
        if encoder is not None:
            encoder.batches.clear()  # the prototypes' own encodes
    return routed


def test_each_language_goes_to_the_first_encoder_that_reads_it(english: KeywordEncoder, multi: KeywordEncoder) -> None:
    texts = ["en: a charge", "de: eine Abbuchung", "en: my parcel", "ru: посылка", "de: Paket"]
    results = router(english, multi).classify(texts)
    assert english.batches == [["en: a charge", "en: my parcel"]]
    assert multi.batches == [["de: eine Abbuchung", "ru: посылка", "de: Paket"]]
    # results in the batch's order, each with its language and the encoder that read it
    assert [r.label for r in results] == ["billing", "billing", "shipping", "shipping", "shipping"]
    assert [r.lang for r in results] == ["en", "de", "en", "ru", "de"]
    assert [r.model.name if r.model else None for r in results] == ["english", "multi", "english", "multi", "multi"]
    assert all(r.lang_supported for r in results)


def test_a_language_no_encoder_reads_is_classified_by_the_other_route_and_says_so(
    english: KeywordEncoder, multi: KeywordEncoder
) -> None:
    results = router(english, multi).classify(["fi: veloitus charge", "und: ???", "en: parcel"])
    assert [r.label for r in results] == ["billing", "shipping", "shipping"]  # never dropped
    assert [(r.lang, r.lang_supported) for r in results] == [("fi", False), ("und", False), ("en", True)]
    assert multi.batches == [["fi: veloitus charge"]]
    assert english.batches == [["und: ???", "en: parcel"]]  # undetermined: the deployment's own encoder


def test_without_a_multilingual_encoder_everything_goes_to_the_default(english: KeywordEncoder) -> None:
    results = router(english, None).classify(["de: Abbuchung", "en: a charge", "zh: 包裹"])
    assert english.batches == [["de: Abbuchung", "en: a charge", "zh: 包裹"]]
    assert [(r.lang, r.lang_supported) for r in results] == [("de", False), ("en", True), ("zh", False)]


def test_parts_give_each_encoders_sub_batch_and_its_seconds(english: KeywordEncoder, multi: KeywordEncoder) -> None:
    results = router(english, multi).classify(["en: a", "de: b", "de: c"])
    assert isinstance(results, RoutedResults)
    assert results.parts == {"english": (1, 0.5), "multi": (2, 0.5)}  # the step clock: 0.5 s per sub-batch


def test_the_router_looks_like_its_primary_classifier(english: KeywordEncoder, multi: KeywordEncoder) -> None:
    r = router(english, multi)
    assert r.info.name == "english"
    assert r.model is english
    assert r.names == ["billing", "shipping"]
    assert r.classify([]) == []


def test_needs_a_route() -> None:
    with pytest.raises(ValueError):
        RoutedClassifier(PrefixLanguageId(), [])
