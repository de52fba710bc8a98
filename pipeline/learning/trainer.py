"""Retrain in the background as feedback arrives, and swap the classifier's taxonomy between batches.

    store reader ─poke()→ Trainer (debounce) ─encode new examples (model thread)→ train (a thread)
                                             ─→ LabelClassifier.swap(Taxonomy) ─→ head record to the store

Guarantees
- Never on the event loop: encoding runs on the classifier's model thread in chunks of `ENCODE_CHUNK` texts (a
  classify batch waits for at most one chunk); sorting and hashing the examples, training and loading heads
  on a thread of its own at a lower CPU priority (`TRAIN_NICE`, as the generator's), so a retrain takes the
  CPU classification leaves. The loop only copies the example map (one list of references).
- Debounced: a retrain starts once the store has been quiet for `learning.retrain_quiet_s`, and at most
  `learning.retrain_max_delay_s` after the first change it has not yet learned from; changes that arrive
  during a retrain start another one after it.
- Atomic: the classifier gets a new `Taxonomy` (labels, prototypes, head, version) in one assignment, read once
  per batch (pipeline/model/classifier.py).
- Convergent: the head is trained on the store's examples sorted by key, with the version a hash of the
  encoder, the labels and the examples (pipeline/learning/store.py), so workers that have read the same
  records compute the same head and version. A head record of that version in the store is loaded instead of
  trained (a restarted worker); a trained head whose version the store lacks is published there.
- With no example and no label added, the taxonomy is the configured one: zero-shot, exactly as without this.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import numpy as np
import structlog

from pipeline import metrics
from pipeline.config import LearningSettings
from pipeline.learning.store import Taught, training_set, version_of
from pipeline.model.classifier import Taxonomy
from pipeline.model.thread import ModelThread
from pipeline.model.worker import ModelWorker

log = structlog.get_logger(__name__)

ENCODE_CHUNK = 8  # texts per model-thread call: a classify batch waits for at most one such call
TRAIN_NICE = 10


class LearnedHead(Protocol):
    version: str

    @property
    def labels(self) -> list[str]: ...
    def scores(self, embeddings: np.ndarray, prototype_scores: np.ndarray) -> np.ndarray: ...
    def to_bytes(self) -> bytes: ...


class TrainFn(Protocol):
    def __call__(
        self, embeddings: np.ndarray, labels: Sequence[str], label_names: Sequence[str], *, version: str
    ) -> LearnedHead: ...


LoadFn = Callable[[bytes], LearnedHead]
PublishHead = Callable[[str, bytes], Awaitable[None]]
Sleep = Callable[[float], Awaitable[object]]


def head_backend() -> tuple[TrainFn, LoadFn]:
    """`train_head` and `Head.from_bytes` of pipeline/learning/head.py (imported when a worker starts learning)."""
    module = importlib.import_module("pipeline.learning.head")
    train: TrainFn = module.train_head
    load: LoadFn = module.Head.from_bytes
    return train, load


class Trainer:
    def __init__(
        self,
        worker: ModelWorker,
        taught: Taught,
        settings: LearningSettings,
        *,
        train: TrainFn,
        load: LoadFn,
        publish_head: PublishHead,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.worker = worker
        self.classifier = worker.learnable
        self.taught = taught
        self.settings = settings
        self.train, self.load, self.publish_head = train, load, publish_head
        self.clock, self.sleep = clock, sleep
        self._changed = asyncio.Event()
        self._first_change: float | None = None
        self._last_change = 0.0
        self._embeddings: dict[str, np.ndarray] = {}  # example text -> its embedding (encoded once)
        self._labels_for: tuple[tuple[str, str], ...] = ()
        self._names, self._prototypes = self.classifier.configured.names, self.classifier.configured.prototypes
        self.version: str | None = None  # of the taxonomy in use
        self.retrains = 0
        self.restores = 0
        self.thread = ModelThread("trainer", nice=TRAIN_NICE)  # training and loading heads

    async def aclose(self) -> None:
        await self.thread.aclose()

    def poke(self) -> None:
        """The store changed (examples or labels): retrain after the debounce."""
        now = self.clock()
        if self._first_change is None:
            self._first_change = now
        self._last_change = now
        self._changed.set()

    def due(self) -> float | None:
        """When the next retrain starts: quiet for retrain_quiet_s, or retrain_max_delay_s after the first
        change not yet learned from (None: nothing changed)."""
        if self._first_change is None:
            return None
        s = self.settings
        return min(self._last_change + s.retrain_quiet_s, self._first_change + s.retrain_max_delay_s)

    async def run(self) -> None:
        """Retrain after each burst of changes, until cancelled."""
        while True:
            await self._changed.wait()
            while (due := self.due()) is not None and (now := self.clock()) < due:
                await self.sleep(due - now)
            self._changed.clear()
            self._first_change = None
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the worker goes on with the taxonomy it has; the next change tries again
                log.error("retrain_failed", error=repr(exc))

    async def refresh(self) -> str | None:
        """Bring the classifier up to what the store holds now; the version in use after it."""
        added = dict(sorted((n, d) for n, d in self.taught.labels.items() if n not in self.classifier.configured.names))
        if tuple(added.items()) != self._labels_for:
            self._names, self._prototypes = (await self.worker.run(lambda: self.classifier.with_labels(added)))[0]
            self._labels_for = tuple(added.items())
        names = self._names
        snapshot = list(self.taught.examples.items())  # a copy on the loop; sorting and hashing on the thread
        texts, labels, version = await self.thread.call(lambda: self._versioned(snapshot, names, added))
        if version == self.version:
            return version
        t0 = time.perf_counter()
        head: LearnedHead | None = None
        how = "labels"
        if texts:
            stored = self.taught.head
            if stored is not None and stored.version == version:
                data = stored.data
                head = await self.thread.call(lambda: self.load(data))
                how = "restored"
                self.restores += 1
            else:
                embeddings = await self._encode(texts)
                assert version is not None
                head = await self.thread.call(lambda: self.train(embeddings, labels, names, version=version))
                how = "trained"
                self.retrains += 1
        self.classifier.swap(Taxonomy(list(names), self._prototypes, head, version))
        self.version = version
        counts = {n: 0 for n in names}
        for label in labels:
            counts[label] += 1
        metrics.set_learning_state(version, counts, how)
        log.info(
            "head_swapped",
            how=how,
            version=version,
            examples=len(texts),
            labels=len(names),
            seconds=round(time.perf_counter() - t0, 3),
        )
        if head is not None and how == "trained" and (self.taught.head is None or self.taught.head.version != version):
            assert version is not None
            await self.publish_head(version, head.to_bytes())
        return version

    def _versioned(
        self, examples: list[tuple[str, tuple[str, str]]], names: list[str], added: dict[str, str]
    ) -> tuple[list[str], list[str], str | None]:
        """The training set and its version (None: nothing learned, the configured taxonomy)."""
        texts, labels = training_set(examples, names, self.settings.max_examples)
        if not texts and not added:
            return texts, labels, None
        return texts, labels, version_of(self.classifier.info.hash, names, added, texts, labels)

    async def _encode(self, texts: Sequence[str]) -> np.ndarray:
        """The embeddings of `texts`, encoding on the model thread only those not seen before, a chunk a call."""
        cache = self._embeddings
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        encode = self.classifier.model.encode
        for i in range(0, len(missing), ENCODE_CHUNK):
            chunk = missing[i : i + ENCODE_CHUNK]
            vecs, _ = await self.worker.run(lambda chunk=chunk: encode(chunk))  # type: ignore[misc]
            cache.update(zip(chunk, np.asarray(vecs, dtype=np.float32), strict=True))
        keep = set(texts)
        for t in [t for t in cache if t not in keep]:  # withdrawn examples: their embeddings go too
            del cache[t]
        return np.stack([cache[t] for t in texts])
