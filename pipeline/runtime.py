"""The worker's runtime: at start it declares the topics, loads the models off the event loop, warms them
up (so the first batches have real service-time estimates), then runs the batch scheduler until the worker
stops. Agents wait for `ready()` before handing it events.
"""

from __future__ import annotations

import asyncio
import sys

import structlog

from pipeline import metrics
from pipeline.batching.scheduler import BatchScheduler
from pipeline.config import Settings
from pipeline.faust_app import ALL_TOPICS, SlmApp
from pipeline.model.base import ModelError
from pipeline.model.catalog import read_manifest
from pipeline.model.classifier import LabelClassifier
from pipeline.model.onnx_encoder import load_encoder
from pipeline.model.worker import ModelWorker
from pipeline.output.sink import FaustSink

log = structlog.get_logger(__name__)

WARMUP_TEXT = "warm-up text for the model, about as long as a short customer message"


def load_classifier(settings: Settings, name: str) -> LabelClassifier:
    m = settings.model
    encoder = load_encoder(
        m.cache_dir, name, threads=m.threads, max_tokens=m.max_tokens, provider=m.provider, sub_batch=m.sub_batch
    )
    c = settings.classifier
    return LabelClassifier(encoder, settings.labels, min_confidence=c.min_confidence, temperature=c.temperature)


def preflight(settings: Settings) -> None:
    """Check the models this worker will load exist, before Faust connects anywhere (ModelError if not)."""
    names = [settings.model.encoder]
    if settings.batching.late_policy == "degrade":
        names.append(settings.model.fallback)
    for name in names:
        read_manifest(settings.model.cache_dir, name)


class Runtime:
    def __init__(self, app: SlmApp) -> None:
        try:
            preflight(app.settings)
        except ModelError as exc:
            print(f"slmstream: cannot start: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        self.app = app
        self.scheduler: BatchScheduler | None = None
        self._ready: asyncio.Event | None = None

    def _ready_event(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    async def ready(self) -> BatchScheduler:
        await self._ready_event().wait()
        assert self.scheduler is not None
        return self.scheduler

    async def run(self) -> None:
        settings = self.app.settings
        for topic in ALL_TOPICS:
            await topic.maybe_declare()
        try:
            primary = ModelWorker(await asyncio.to_thread(load_classifier, settings, settings.model.encoder))
            fallback = None
            if settings.batching.late_policy == "degrade":
                fallback = ModelWorker(await asyncio.to_thread(load_classifier, settings, settings.model.fallback))
        except ModelError as exc:
            log.error("model_load_failed", error=str(exc))
            print(f"slmstream: cannot start: {exc}", file=sys.stderr)
            await self.app.crash(exc)
            return
        scheduler = BatchScheduler(settings, primary, fallback, FaustSink(self.app))
        await self._warm_up(scheduler, primary)
        self.scheduler = scheduler
        self._ready_event().set()
        max_batch = settings.batching.max_batch
        log.info(
            "runtime_ready",
            model=primary.classifier.info.name,
            labels=len(primary.classifier.names),
            policy=settings.batching.late_policy,
            budget_ms=settings.batching.budget_ms,
            max_batch=max_batch,
            service_ms={
                n: round(scheduler.service_time.estimate(n) * 1000, 1) for n in (1, settings.batching.max_batch)
            },
        )
        await scheduler.run()

    async def _warm_up(self, scheduler: BatchScheduler, worker: ModelWorker) -> None:
        """A few real batches: onnxruntime's first runs are slow, and the service-time model needs data."""
        sizes = sorted({1, max(1, scheduler.main.max_batch // 2), scheduler.main.max_batch})
        for _ in range(2):
            for n in sizes:
                _, seconds = await worker.classify([WARMUP_TEXT] * n)
                scheduler.service_time.observe(n, seconds)

    async def record_lag(self) -> None:
        consumer = self.app.consumer
        committed = getattr(consumer, "_committed_offset", {})  # Faust keeps no public accessor
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            done = committed.get(tp) or 0
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(high - done, 0))
