"""The bare model in this process: `LabelClassifier.classify` on the bench texts, no Kafka, no event loop.

Run it before the worker starts, so that nothing else competes for the cores.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.procstat import machine_busy_s, proc_cpu_s
from bench.stats import best_rate
from pipeline.config import Settings


@dataclass
class BareResult:
    model: str
    model_hash: str
    provider: str
    batch_size: int
    texts: int
    load_s: float
    repeats_s: list[float] = field(default_factory=list)  # one pass over `texts` at batch_size
    texts_per_s: float = 0.0  # best repeat
    batch1_texts: int = 0
    batch1_repeats_s: list[float] = field(default_factory=list)
    batch1_texts_per_s: float = 0.0
    # cores used during the batch_size repeats: by this process, and by everything else on the machine
    cores: float = 0.0
    other_processes_cores: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _pass(classify: Callable[[Sequence[str]], object], texts: Sequence[str], batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        classify(texts[i : i + batch])
    return time.perf_counter() - t0


def measure_bare_model(
    settings: Settings,
    texts: Sequence[str],
    batch_size: int,
    *,
    repeats: int = 3,
    batch1_texts: int = 400,
    batch1_repeats: int = 2,
    progress: Callable[[str], None] = lambda _: None,
) -> BareResult:
    from pipeline.runtime import load_classifier  # the worker's own construction, imported when measuring

    t0 = time.perf_counter()
    classifier = load_classifier(settings, settings.model.encoder)
    load_s = time.perf_counter() - t0
    model = classifier.model
    result = BareResult(
        model=classifier.info.name,
        model_hash=classifier.info.hash,
        provider=getattr(model, "provider", "?"),
        batch_size=batch_size,
        texts=len(texts),
        load_s=load_s,
    )
    try:
        # Warm-up: onnxruntime's first runs are slow (allocations, kernel selection).
        _pass(classifier.classify, texts[: batch_size * 4], batch_size)
        _pass(classifier.classify, texts[:8], 1)
        pid = os.getpid()
        own0, all0, wall0 = proc_cpu_s(pid), machine_busy_s(), time.perf_counter()
        for r in range(repeats):
            progress(f"bare model, batch {batch_size}: repeat {r + 1}/{repeats}")
            result.repeats_s.append(_pass(classifier.classify, texts, batch_size))
        own, wall = proc_cpu_s(pid) - own0, time.perf_counter() - wall0
        result.cores = own / wall
        result.other_processes_cores = max(machine_busy_s() - all0 - own, 0.0) / wall
        result.texts_per_s = best_rate(len(texts), result.repeats_s)
        b1 = list(texts[:batch1_texts])
        result.batch1_texts = len(b1)
        for r in range(batch1_repeats):
            progress(f"bare model, batch 1: repeat {r + 1}/{batch1_repeats}")
            result.batch1_repeats_s.append(_pass(classifier.classify, b1, 1))
        result.batch1_texts_per_s = best_rate(len(b1), result.batch1_repeats_s)
    finally:
        del classifier, model
        gc.collect()  # drop the session (and its thread pool) before the worker needs the cores
    return result
