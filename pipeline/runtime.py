"""The worker's runtime: at start it declares the topics, loads the models off the event loop, warms them
up (so the first batches have real service-time estimates), then runs the batch scheduler until the worker
stops. Agents wait for `ready()` before handing it events.
"""

from __future__ import annotations

import asyncio
import sys
from functools import partial

import structlog

from pipeline import metrics
from pipeline.analytics.embedder import ClassifierEmbedder
from pipeline.analytics.runner import WindowAnalytics
from pipeline.batching.scheduler import BatchScheduler
from pipeline.config import Settings
from pipeline.faust_app import ALL_TOPICS, ANALYTICS_TOPICS, SlmApp
from pipeline.model.base import ModelError
from pipeline.model.catalog import read_manifest
from pipeline.model.classifier import LabelClassifier
from pipeline.model.faults import with_injected_faults
from pipeline.model.identity import IDENTITY
from pipeline.model.loading import open_encoder
from pipeline.model.worker import ModelWorker
from pipeline.output.sink import FaustSink

log = structlog.get_logger(__name__)

WARMUP_TEXT = "warm-up text for the model, about as long as a short customer message"


def load_classifier(settings: Settings, name: str) -> LabelClassifier:
    # with_injected_faults is TEST-ONLY: a no-op unless SLMTEST_MODEL_FAIL_TOKEN is set.
    encoder = with_injected_faults(open_encoder(settings.model, name))
    c = settings.classifier
    return LabelClassifier(encoder, settings.labels, min_confidence=c.min_confidence, temperature=c.temperature)


def preflight(settings: Settings) -> None:
    """Check the models this worker will load exist, before Faust connects anywhere (ModelError if not)."""
    if settings.summaries.enabled:  # the generator is always loaded in this process
        from pipeline.model.onnx_generator import generator_dir, read_generator_manifest

        read_generator_manifest(generator_dir(settings.model.cache_dir, settings.summaries.generator))
    if settings.model.server_socket is not None:
        return  # the model server loads (and checks) the models
    names = [settings.model.encoder]
    if settings.batching.late_policy == "degrade":
        names.append(settings.model.fallback)
    for name in names:
        if name != IDENTITY:  # the identity model has no files
            read_manifest(settings.model.cache_dir, name)


async def start_analytics(settings: Settings, encoder: ModelWorker, sink: FaustSink) -> WindowAnalytics:
    """The window analytics: the generator loaded on its own thread (summaries on), the classifier's encoder
    reused for extractive summaries, and the dashboard fed with every record the broker acknowledged."""
    from pipeline.dashboard.live import LIVE
    from pipeline.model.onnx_generator import load_generator
    from pipeline.model.worker import GeneratorWorker

    s = settings.summaries
    generator = None
    if s.enabled:
        generator = await GeneratorWorker(nice=s.nice).load(
            partial(load_generator, settings.model.cache_dir, s.generator, threads=s.threads, max_batch=s.max_batch)
        )
    analytics = WindowAnalytics(
        settings, sink, ClassifierEmbedder(encoder, settings.model.sub_batch), generator, live=LIVE
    )
    if generator is not None:  # a first real call: onnxruntime's first run is slow, and the planner learns
        _, stats = await generator.generate([WARMUP_TEXT], 8)
        analytics.gen_time.observe(stats.prompt_tokens, stats.prefill_s, stats.new_tokens, stats.decode_s)
    log.info(
        "analytics_ready",
        summaries=s.enabled,
        alerts=settings.alerts.enabled,
        key=s.key,
        window_s=s.window_s,
        generator=generator.name if generator else None,
    )
    return analytics


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
        self.analytics: WindowAnalytics | None = None  # summaries/stats/alerts, when enabled

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
        analytics_on = settings.summaries.enabled or settings.alerts.enabled
        for topic in ALL_TOPICS + (ANALYTICS_TOPICS if analytics_on else ()):
            await topic.maybe_declare()
        try:
            fallback: ModelWorker | None = None
            if settings.model.server_socket is not None:  # one model process shared by this host's workers
                from pipeline.model.remote import connect_workers

                primary, fallback = await connect_workers(settings)
            else:
                primary = ModelWorker(await asyncio.to_thread(load_classifier, settings, settings.model.encoder))
                if settings.batching.late_policy == "degrade":
                    fallback = ModelWorker(await asyncio.to_thread(load_classifier, settings, settings.model.fallback))
        except ModelError as exc:
            log.error("model_load_failed", error=str(exc))
            print(f"slmstream: cannot start: {exc}", file=sys.stderr)
            await self.app.crash(exc)
            return
        scheduler = BatchScheduler(settings, primary, fallback, FaustSink(self.app))
        await self._warm_up(scheduler, primary)
        if analytics_on:
            try:
                self.analytics = await start_analytics(settings, primary, FaustSink(self.app))
            except ModelError as exc:
                log.error("model_load_failed", error=str(exc))
                print(f"slmstream: cannot start: {exc}", file=sys.stderr)
                await self.app.crash(exc)
                return
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
        if self.analytics is not None:
            await asyncio.gather(scheduler.run(), self.analytics.run())
        else:
            await scheduler.run()

    async def analytics_ready(self) -> WindowAnalytics:
        await self.ready()
        assert self.analytics is not None, "the analyze agent runs only with summaries or alerts enabled"
        return self.analytics

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
