"""pipeline/learning/trainer.py on a tiny fake encoder and the real head: zero-shot exactly as before with no
feedback; a retrain swaps the whole taxonomy and names its version in every result; a stored head of the
same version is loaded, not trained; the debounce on a fake clock; labels added through feedback."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from pipeline import metrics
from pipeline.config import LearningSettings
from pipeline.learning.feedback import example_key
from pipeline.learning.head import Head, train_head
from pipeline.learning.store import HEAD_KEY, Taught, example_record, head_record, label_record
from pipeline.learning.trainer import LearnedHead, Trainer
from pipeline.model.classifier import LabelClassifier, unit_rows
from pipeline.model.worker import ModelWorker
from tests.pipeline.model.test_classifier import LABELS, BagOfWords

TEXTS = ["an unexpected charge on my card", "my package, no tracking", "the app shows an error", "card payment"]
EXAMPLES = [
    ("charge on the invoice", "billing"),
    ("card payment failed", "billing"),
    ("courier lost the package", "shipping"),
    ("tracking of my delivery", "shipping"),
    ("app crash", "technical_issue"),
    ("error in the app", "technical_issue"),
]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def make(
    taught: Taught | None = None, *, train=train_head, clock: Clock | None = None, **settings: float
) -> tuple[Trainer, list[tuple[str, bytes]]]:
    worker = ModelWorker(LabelClassifier(BagOfWords(), LABELS, min_confidence=0.35, temperature=0.05))
    published: list[tuple[str, bytes]] = []

    async def publish(version: str, data: bytes) -> None:
        published.append((version, data))

    clock = clock or Clock()
    trainer = Trainer(
        worker,
        taught or Taught(),
        LearningSettings(**settings),
        train=train,
        load=Head.from_bytes,
        publish_head=publish,
        clock=clock,
        sleep=clock.sleep,
    )
    return trainer, published


async def close(trainer: Trainer) -> None:
    await trainer.aclose()
    await trainer.worker.aclose()


def teach(taught: Taught, examples: Sequence[tuple[str, str]] = EXAMPLES) -> None:
    for text, label in examples:
        taught.apply(example_key(text).encode(), example_record(text, label, by=None, ts_ms=None))


async def test_no_feedback_is_exactly_zero_shot() -> None:
    reference = LabelClassifier(BagOfWords(), LABELS, min_confidence=0.35, temperature=0.05)
    trainer, published = make()
    assert await trainer.refresh() is None
    c = trainer.classifier
    emb = c.model.encode(TEXTS)
    assert np.array_equal(c.score(emb), reference.score(emb))  # bit-equal
    assert c.classify(TEXTS) == reference.classify(TEXTS)
    assert all(r.head is None for r in c.classify(TEXTS))
    assert published == []
    await close(trainer)


async def test_retrain_swaps_the_taxonomy_and_results_name_the_head() -> None:
    taught = Taught()
    teach(taught)
    trainer, published = make(taught)
    version = await trainer.refresh()
    assert version is not None and version.startswith("head-6-")
    results = trainer.classifier.classify(TEXTS)
    assert {r.head for r in results} == {version}
    assert [r.label for r in results][:3] == ["billing", "shipping", "technical_issue"]
    assert [v for v, _ in published] == [version]  # published once, for restarted workers
    assert metrics.REGISTRY.get_sample_value("slmstream_head_info", {"version": version}) == 1
    assert metrics.REGISTRY.get_sample_value("slmstream_learned_examples", {"label": "billing"}) == 2
    assert await trainer.refresh() == version and trainer.retrains == 1  # nothing new: no retrain
    await close(trainer)


async def test_a_stored_head_of_the_same_version_is_loaded_not_trained() -> None:
    taught = Taught()
    teach(taught)
    first, published = make(taught)
    version = await first.refresh()
    ((_, data),) = published
    restarted = Taught()
    teach(restarted)
    restarted.apply(HEAD_KEY.encode(), head_record(version or "", data))

    def must_not_train(*args: object, **kwargs: object) -> LearnedHead:
        raise AssertionError("trained again")

    second, published_again = make(restarted, train=must_not_train)
    assert await second.refresh() == version
    assert second.restores == 1 and published_again == []
    emb = first.classifier.model.encode(TEXTS)
    assert np.array_equal(first.classifier.score(emb), second.classifier.score(emb))
    # A stored head of another version (an older example set) is not used: this one trains.
    teach(restarted, [("invoice charge card", "billing")])
    with pytest.raises(AssertionError, match="trained again"):
        await second.refresh()
    await close(first)
    await close(second)


async def test_same_examples_in_another_order_give_the_same_head_and_version() -> None:
    one, two = Taught(), Taught()
    teach(one)
    teach(two, list(reversed(EXAMPLES)))
    a, pa = make(one)
    b, pb = make(two)
    assert await a.refresh() == await b.refresh()
    assert pa[0][1] == pb[0][1]  # the same bytes
    await close(a)
    await close(b)


async def test_a_label_added_through_feedback_gets_its_description_prototype() -> None:
    taught = Taught()
    taught.apply(b"label:refund", label_record("refund", "refund money back", by=None, ts_ms=None))
    trainer, _ = make(taught)
    version = await trainer.refresh()
    c = trainer.classifier
    assert version is not None and version.startswith("head-0-")
    assert c.names == [*LABELS, "refund"]
    np.testing.assert_allclose(c.prototypes[-1], unit_rows(BagOfWords().encode(["refund money back"]))[0])
    assert all(set(r.scores) == set(c.names) for r in c.classify(TEXTS))
    assert c.configured.names == list(LABELS)  # the configured taxonomy is kept apart
    await close(trainer)


def test_debounce_waits_for_quiet_but_not_longer_than_the_max_delay() -> None:
    clock = Clock()
    trainer, _ = make(clock=clock, retrain_quiet_s=1.0, retrain_max_delay_s=5.0)
    assert trainer.due() is None
    trainer.poke()
    assert trainer.due() == 1.0
    clock.now = 0.5
    trainer.poke()
    assert trainer.due() == 1.5
    for step in range(1, 20):  # feedback every 0.5 s, never quiet
        clock.now = 0.5 + step * 0.5
        trainer.poke()
    assert trainer.due() == 5.0


async def test_run_retrains_once_per_burst_after_the_debounce() -> None:
    clock = Clock()
    taught = Taught()
    trainer, published = make(taught, clock=clock, retrain_quiet_s=1.0, retrain_max_delay_s=5.0)
    teach(taught)
    for _ in range(3):
        trainer.poke()
    refreshed = asyncio.Event()
    refresh = trainer.refresh

    async def refresh_and_tell() -> str | None:
        version = await refresh()
        refreshed.set()
        return version

    trainer.refresh = refresh_and_tell  # type: ignore[method-assign]
    task = asyncio.ensure_future(trainer.run())
    await asyncio.wait_for(refreshed.wait(), 30)
    assert trainer.version is not None and trainer.retrains == 1
    assert clock.now >= 1.0  # not before the store was quiet for retrain_quiet_s (fake time)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await close(trainer)
