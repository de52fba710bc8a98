"""pipeline/analytics/embedder.py: the classifier's encoder, on the classifier's model thread, chunk by chunk."""

from __future__ import annotations

import threading

import numpy as np

from pipeline.analytics.embedder import ClassifierEmbedder
from pipeline.model.worker import ModelWorker
from tests.pipeline.model.test_classifier import BagOfWords, classifier


async def test_embeds_in_chunks_on_the_classifier_thread_rows_in_order() -> None:
    worker = ModelWorker(classifier(), name="test-embed")
    try:
        model = worker.classifier.model
        assert isinstance(model, BagOfWords)
        seen: list[str] = []
        encode = model.encode

        def encode_here(texts):
            seen.append(threading.current_thread().name)
            return encode(texts)

        model.encode = encode_here  # type: ignore[method-assign]
        embedder = ClassifierEmbedder(worker, chunk=2)
        assert embedder.name == "bag-of-words"
        texts = ["charge", "courier", "app crash", "invoice", "tracking"]
        rows = await embedder.embed(texts)
        np.testing.assert_array_equal(rows, BagOfWords().encode(texts))
        assert model.encoded[-3:] == [["charge", "courier"], ["app crash", "invoice"], ["tracking"]]
        assert len(seen) == 3 and all(name.startswith("test-embed") for name in seen)
        assert (await embedder.embed([])).shape[0] == 0
    finally:
        await worker.aclose()
