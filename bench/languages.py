"""`slmstream bench languages`: per-language accuracy through the whole pipeline (produce → worker →
events.enriched), before (every event to the default encoder) and after (routed by language), and each
encoder's texts/s on the same texts.

The test set (pipeline/samples/multilingual_events.jsonl) has short customer messages in several languages,
each with `attrs.lang` and `attrs.expected_label`; the labels are the shipped taxonomy's, described in English
(zero-shot across languages).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.events import make_events
from bench.loadgen import make_producer
from bench.pipeline import Collector, Harness, blast
from pipeline.config import Settings

CONFIGS = {"before": "", "after": None}  # model.multilingual: "" → all to model.encoder; None → as configured


def accuracy(docs: Sequence[dict], records: dict[bytes, tuple[float, bytes]], prefix: str) -> dict[str, Any]:
    """Per language (the test set's `attrs.lang`): label accuracy, language-ID accuracy, and which encoders
    answered; `all` over every event."""
    hits: dict[str, list[bool]] = defaultdict(list)
    lid: dict[str, list[bool]] = defaultdict(list)
    models: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for i, doc in enumerate(docs):
        _, value = records[f"{prefix}-{i:06d}".encode()]
        analysis = orjson.loads(value)["analysis"]
        lang = doc["attrs"]["lang"]
        for key in (lang, "all"):
            hits[key].append(analysis["label"] == doc["attrs"]["expected_label"])
            lid[key].append(analysis.get("lang") == lang)
            models[key][analysis["model"]["name"]] += 1
    order = [*(k for k in hits if k != "all"), "all"]
    return {
        lang: {
            "events": len(h),
            "accuracy": round(sum(h) / len(h), 3),
            "lang_id_accuracy": round(sum(lid[lang]) / len(h), 3),
            "models": dict(models[lang]),
        }
        for lang, h in ((k, hits[k]) for k in order)
    }


async def _classify_through(harness: Harness, settings: Settings, docs: Sequence[dict], prefix: str) -> Any:
    collector = Collector(settings, harness.bootstrap)
    await collector.start()
    producer = await make_producer(harness.bootstrap)
    try:
        await blast(producer, settings.topics.events, make_events(docs, len(docs), prefix))
        if not await collector.wait_for(prefix, len(docs), 120.0, harness.check_alive):
            raise RuntimeError(f"only {collector.count(prefix)} of {len(docs)} results within 120 s")
        return dict(collector.records(prefix))
    finally:
        await producer.stop()
        await collector.stop()


def run_config(
    settings: Settings, engine: str, run_dir: Path, docs: Sequence[dict], name: str, multilingual: str | None
) -> dict[str, Any]:
    env = {} if multilingual is None else {"SLMSTREAM_MODEL__MULTILINGUAL": multilingual}
    harness = Harness(settings, engine, run_dir / name, f"{run_dir.name}-{name}", settings.batching.max_batch)
    harness.extra_env = env
    try:
        harness.start()
        records = asyncio.run(_classify_through(harness, settings, docs, name))
    finally:
        harness.stop()
    return accuracy(docs, records, name)


def encoder_speed(settings: Settings, names: Sequence[str], texts: Sequence[str], batch: int) -> dict[str, float]:
    """Texts/s of each encoder alone (in this process, batches of `batch`, best of 3 passes)."""
    from pipeline.model.loading import open_encoder

    out = {}
    for name in names:
        encoder = open_encoder(settings.model, name)
        encoder.encode(list(texts[:batch]))  # onnxruntime's first run is slow
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for i in range(0, len(texts), batch):
                encoder.encode(list(texts[i : i + batch]))
            best = min(best, time.perf_counter() - t0)
        out[name] = round(len(texts) / best, 1)
    return out


def run_languages(
    settings: Settings, engine: str, run_dir: Path, docs: Sequence[dict], progress: Callable[[str], None]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, multilingual in CONFIGS.items():
        progress(f"{name}: a fresh broker and worker, model.multilingual={multilingual!r}")
        results[name] = run_config(settings, engine, run_dir, docs, name, multilingual)
    names = [settings.model.encoder] + ([settings.model.multilingual] if settings.model.multilingual else [])
    progress(f"texts/s of {', '.join(names)} (batch {settings.batching.max_batch})")
    results["texts_per_s"] = encoder_speed(settings, names, [d["text"] for d in docs], settings.batching.max_batch)
    return results
