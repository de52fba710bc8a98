"""Each text to an encoder that reads its language: language ID and the per-encoder sub-batches of one batch.

    batch of texts ─LanguageId→ one language each ─route→ a sub-batch per encoder ─LabelClassifier each→
        results back in the batch's order (RoutedResults), and each sub-batch's size and seconds (`parts`)

Routes are tried in order: the first whose encoder was trained on a text's language reads it (English first to
MiniLM, which is better on English; other languages to the multilingual encoder). A text in a language no
route reads is still classified, by `other` (the multilingual encoder when there is one), and its result says
`lang_supported=False`: it is never dropped. A text whose language is undetermined (`und`: mostly very short
ones, e.g. "Do your gift cards expire?" reads as Danish 0.24, Swedish 0.23, English 0.17) goes to the first
route, the deployment's own encoder, and says `lang_supported=False` too.

Guarantees: results come back in the order of `texts`, whatever the routes (the scheduler delivers and acks a
batch as one, so per-partition order and the commit order hold as without routing). The sub-batches run one
after the other on the calling thread (the model thread): never concurrently, and each encoder sees only its
own sub-batch, so with batch-independent encoders a text's result does not depend on its batch-mates either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.model.base import Encoder
from pipeline.model.classifier import LabelClassifier
from pipeline.model.language import UNDETERMINED, LanguageId
from pipeline.output.records import Classification, ModelInfo


@dataclass(frozen=True)
class Route:
    classifier: LabelClassifier
    languages: frozenset[str]  # what its encoder was trained on


class RoutedResults(list[Classification]):
    """A batch's results in its order, and `parts`: encoder name → (texts, seconds) of its sub-batch."""

    def __init__(self, results: Sequence[Classification], parts: dict[str, tuple[int, float]]) -> None:
        super().__init__(results)
        self.parts = parts


class RoutedClassifier:
    """A `LabelClassifier`'s interface (model, info, names, classify) over several by language."""

    def __init__(
        self,
        language_id: LanguageId,
        routes: Sequence[Route],
        *,
        other: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not routes:
            raise ValueError("a router needs at least one route")
        if other is not None and not 0 <= other < len(routes):
            raise ValueError(f"other={other}: no such route")
        self.language_id = language_id
        self.routes = tuple(routes)
        self.other = len(routes) - 1 if other is None else other  # unread or undetermined languages go here
        self.clock = clock
        primary = routes[0].classifier
        self.model: Encoder = primary.model  # what extractive summaries embed with (analytics/embedder.py)
        self.info: ModelInfo = primary.info
        self.primary: LabelClassifier = primary  # the default encoder's: the one a learned head is trained for
        self._route_of: dict[str, tuple[int, bool]] = {}  # language → (route, read by it): cached

    @property
    def names(self) -> list[str]:
        """The primary classifier's labels (a label taught through feedback appears here when its head does)."""
        return self.primary.names

    def route(self, lang: str) -> tuple[int, bool]:
        """The route for `lang` and whether its encoder reads that language."""
        found = self._route_of.get(lang)
        if found is None:
            unread = (0, False) if lang == UNDETERMINED else (self.other, False)
            found = next(((i, True) for i, r in enumerate(self.routes) if lang in r.languages), unread)
            self._route_of[lang] = found
        return found

    def classify(self, texts: Sequence[str]) -> RoutedResults:
        langs = self.language_id.detect(texts)
        groups: dict[int, list[int]] = {}
        supported: list[bool] = []
        for i, lang in enumerate(langs):
            r, ok = self.route(lang)
            groups.setdefault(r, []).append(i)
            supported.append(ok)
        results: list[Classification | None] = [None] * len(texts)
        parts: dict[str, tuple[int, float]] = {}
        for r, idx in sorted(groups.items()):
            classifier = self.routes[r].classifier
            t0 = self.clock()
            out = classifier.classify([texts[i] for i in idx], [langs[i] for i in idx], [supported[i] for i in idx])
            parts[classifier.info.name] = (len(idx), self.clock() - t0)
            for i, c in zip(idx, out, strict=True):
                results[i] = c
        return RoutedResults([c for c in results if c is not None], parts)
