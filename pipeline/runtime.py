"""The worker's runtime: a `mode.Service` that Faust starts and stops with the app (pipeline/worker.py adds it
with `app.service(runtime)`).

Start (`_run`, a task of this service): declare the topics, load the models off the event loop, warm them up
(so the first batches have real service-time estimates), wait (bounded) until the reference facts are read
whole when `facts.enabled` (pipeline/facts/reader.py, a service started beside this one), then run the batch
scheduler (and the window analytics) until the worker stops. The classify reader (pipeline/ingest/reader.py)
and the analyze agent wait for `ready()` before handing it events.

Graceful stop (SIGTERM), in Faust's order:
  1. the app stops fetching and waits until every message handed to an agent is acked (`stream_wait_empty`);
     this service still runs then, so batches waiting or in the model finish and are delivered;
  2. Faust stops the app's services, the last added first: the classify reader stops fetching, drains the
     scheduler and commits its offsets, then leaves its group; then this one: `on_stop` drains what is left
     (the analytics' open sends: each input acked once the broker has its result), then the loops stop;
  3. `on_shutdown` closes the model threads (and the model-server connection);
  4. Faust's consumer, stopped after this service, commits every offset acked so far, the drained ones included.
Records held in open analytics windows are not waited for (agents/analyze.py): not acked, they are read
again by whoever owns the partition next.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import mode
import structlog

from pipeline import metrics
from pipeline.analytics.embedder import ClassifierEmbedder
from pipeline.analytics.restore import read_stats_tail, records_per_partition
from pipeline.analytics.runner import WindowAnalytics
from pipeline.batching.scheduler import BatchScheduler, InputsDone
from pipeline.config import Settings
from pipeline.facts.reader import FactsReader
from pipeline.faust_app import SlmApp, WorkerTopics
from pipeline.gc_tuning import settle_heap
from pipeline.kafka_transport import committed_offsets
from pipeline.model.base import ModelError
from pipeline.model.catalog import CATALOG, read_manifest
from pipeline.model.classifier import LabelClassifier
from pipeline.model.faults import with_injected_faults
from pipeline.model.identity import IDENTITY
from pipeline.model.language import FastTextLanguageId
from pipeline.model.loading import open_encoder
from pipeline.model.router import Route, RoutedClassifier
from pipeline.model.worker import ModelWorker
from pipeline.output.observers import Observer
from pipeline.output.sink import FaustSink, ProducerSink

if TYPE_CHECKING:
    from pipeline.learning.service import LearningService

log = structlog.get_logger(__name__)

DRAIN_TIMEOUT_S = 60.0  # a stop that cannot reach the broker gives up: what is not acked is read again later
WARMUP_TEXT = "warm-up text for the model, about as long as a short customer message"
WARMUP_OTHER_LANGUAGE = "Aufwärmtext für das Modell, etwa so lang wie eine kurze Kundennachricht"


def load_classifier(settings: Settings, name: str) -> LabelClassifier:
    # with_injected_faults is TEST-ONLY: a no-op unless SLMTEST_MODEL_FAIL_TOKEN is set.
    encoder = with_injected_faults(open_encoder(settings.model, name))
    c = settings.classifier
    return LabelClassifier(encoder, settings.labels, min_confidence=c.min_confidence, temperature=c.temperature)


def encoder_languages(name: str) -> frozenset[str]:
    """The languages the catalog says encoder `name` was trained on (none known: an imported or identity one)."""
    spec = CATALOG.get(name)
    return frozenset(spec.languages) if spec is not None else frozenset()


def route_by_language(primary: LabelClassifier, multilingual: LabelClassifier | None) -> RoutedClassifier:
    """`primary` first (its languages: English for MiniLM), then the multilingual encoder, which also reads
    what neither reads (or what is undetermined); without it, `primary` reads everything."""
    routes = [Route(primary, encoder_languages(primary.info.name))]
    if multilingual is not None:
        routes.append(Route(multilingual, encoder_languages(multilingual.info.name)))
    return RoutedClassifier(FastTextLanguageId(), routes)


def load_routed(settings: Settings, name: str, *, multilingual: bool) -> LabelClassifier | RoutedClassifier:
    """The classifier for encoder `name`, behind language ID and routing when `model.language_id` is on (not
    for the identity model, which reads nothing): with `multilingual`, non-English events go to
    `model.multilingual` if it is built; if not, a log line says so and everything goes to `name`."""
    primary = load_classifier(settings, name)
    m = settings.model
    if not m.language_id or name == IDENTITY:
        return primary
    other: LabelClassifier | None = None
    if multilingual and m.multilingual and m.multilingual != name:
        try:
            read_manifest(m.cache_dir, m.multilingual)
        except ModelError as exc:
            log.warning(
                "multilingual_encoder_missing",
                model=m.multilingual,
                reason=str(exc),
                effect=f"every language goes to {name}; build it with `slmstream models build {m.multilingual}`",
            )
        else:
            other = load_classifier(settings, m.multilingual)
    router = route_by_language(primary, other)
    log.info(
        "language_routes",
        routes={r.classifier.info.name: sorted(r.languages) for r in router.routes},
        other=router.routes[router.other].classifier.info.name,
    )
    return router


def generator_languages(settings: Settings) -> frozenset[str] | None:
    """What the summaries' generator writes: `summaries.generator_languages`, else the catalog's languages
    for a catalog generator, else None (any: an imported Qwen2 or Gemma decoder reads many)."""
    s = settings.summaries
    if s.generator_languages is not None:
        return frozenset(s.generator_languages)
    spec = CATALOG.get(s.generator)
    return frozenset(spec.languages) if spec is not None and spec.languages else None


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


async def start_analytics(
    settings: Settings,
    encoder: ModelWorker,
    sink: FaustSink,
    on_close: Callable[[Callable[[], Any]], None],
    observers: Sequence[Observer] = (),
) -> WindowAnalytics:
    """The window analytics: the generator loaded on its own thread (summaries on), the classifier's encoder
    reused for extractive summaries, and the observers (dashboard, metrics) told of every record stored."""
    from pipeline.model.onnx_generator import load_generator
    from pipeline.model.worker import GeneratorWorker

    s = settings.summaries
    generator = None
    if s.enabled:
        generator = await GeneratorWorker(nice=s.nice).load(
            partial(load_generator, settings.model.cache_dir, s.generator, threads=s.threads, max_batch=s.max_batch)
        )
        on_close(generator.aclose)
    analytics = WindowAnalytics(
        settings,
        sink,
        ClassifierEmbedder(encoder, settings.model.sub_batch),
        generator,
        observers=observers,
        language_id=FastTextLanguageId() if settings.model.language_id and generator is not None else None,
        generator_languages=generator_languages(settings),
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


class Runtime(mode.Service):
    """Models, scheduler and analytics of one worker, with the lifecycle described at the top of this module."""

    def __init__(
        self,
        app: SlmApp,
        topics: WorkerTopics,
        observers: Sequence[Observer] = (),
        inputs_done: InputsDone | None = None,
        facts: FactsReader | None = None,
    ) -> None:
        super().__init__()
        self.app = app
        self.facts = facts  # the reference facts (facts.enabled): read whole before this runtime is ready
        self.inputs_done = inputs_done  # the classify reader's offset bookkeeping (pipeline/ingest/reader.py)
        self.settings = app.settings
        self.topics = topics
        self.observers = tuple(observers)  # the dashboard's live state and the metrics
        self.scheduler: BatchScheduler | None = None
        self.analytics: WindowAnalytics | None = None  # summaries/stats/alerts, when enabled
        self._ready: asyncio.Event | None = None
        self._closers: list[Callable[[], Any]] = []  # model threads and connections, closed at shutdown
        self.assigned_by_key: list[int] = []  # partitions of events.enriched.by-key this worker owns now
        self.assigned_partials: list[int] = []  # partitions of events.stats.partials (the merger's) it owns now
        self._stats_restore: asyncio.Future[None] | None = None
        self.learning: LearningService | None = None  # feedback and the learned head (set by build_worker)

    @property
    def analytics_on(self) -> bool:
        return self.settings.summaries.enabled or self.settings.alerts.enabled

    def is_ready(self) -> bool:
        return self.scheduler is not None

    def _ready_event(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    async def ready(self) -> BatchScheduler:
        await self._ready_event().wait()
        assert self.scheduler is not None
        return self.scheduler

    async def analytics_ready(self) -> WindowAnalytics:
        await self.ready()
        assert self.analytics is not None, "the analyze agent runs only with summaries or alerts enabled"
        return self.analytics

    # ---- start --------------------------------------------------------------------------------------------
    @mode.Service.task
    async def _run(self) -> None:
        settings = self.settings
        for topic in self.topics.classify_path + (self.topics.analytics if self.analytics_on else ()):
            await topic.maybe_declare()
        try:
            primary, fallback = await self._load_models()
        except ModelError as exc:
            await self._cannot_start(exc)
            return
        scheduler = BatchScheduler(
            settings,
            primary,
            fallback,
            ProducerSink(self.app),
            observers=self.observers,
            inputs_done=self.inputs_done,
            facts=self.facts.join if self.facts is not None else None,
        )
        await self._warm_up(scheduler, primary)
        if self.learning is not None:  # before the first event: a restarted worker uses the stored head at once
            try:
                await self.learning.begin(primary)
            except Exception as exc:  # classification does not depend on it: go on zero-shot, say so
                log.error("learning_not_started", error=repr(exc))
        if self.analytics_on:
            try:
                self.analytics = await start_analytics(
                    settings, primary, FaustSink(self.app), self._closers.append, self.observers
                )
            except ModelError as exc:
                await self._cannot_start(exc)
                return
            self.analytics.assign(self.assigned_by_key)  # assigned before the analytics were ready
            self.partials_assigned(self.assigned_partials)
        if self.facts is not None:  # read while the models loaded; the rest (if any) joins as it arrives
            await self.facts.wait_loaded(settings.facts.load_timeout_s)
        self.scheduler = scheduler
        # Startup's objects out of the collector's way, and no young collection every few dozen events
        # (pipeline/gc_tuning.py: ~4 µs of CPU an event with CPython's defaults). Once, before the first event.
        frozen = settle_heap()
        self._ready_event().set()
        log.info(
            "runtime_ready",
            model=primary.classifier.info.name,
            labels=len(primary.classifier.names),
            policy=settings.batching.late_policy,
            budget_ms=settings.batching.budget_ms,
            max_batch=settings.batching.max_batch,
            gc_frozen=frozen,
            service_ms={
                n: round(scheduler.service_time.estimate(n) * 1000, 1) for n in (1, settings.batching.max_batch)
            },
        )
        if self.analytics is not None:
            await asyncio.gather(scheduler.run(), self.analytics.run())
        else:
            await scheduler.run()

    async def _load_models(self) -> tuple[ModelWorker, ModelWorker | None]:
        settings = self.settings
        fallback: ModelWorker | None = None
        if settings.model.server_socket is not None:  # one model process shared by this host's workers
            from pipeline.model.remote import RemoteEncoder, connect_workers

            primary, fallback = await connect_workers(settings)
            if settings.model.language_id:
                log.warning("languages_not_routed", reason="model.server_socket: the model server serves one encoder")
            encoder = primary.classifier.model
            assert isinstance(encoder, RemoteEncoder)
            self._closers.append(encoder.client.close)  # one connection serves both
        else:
            primary = ModelWorker(
                await asyncio.to_thread(load_routed, settings, settings.model.encoder, multilingual=True)
            )
            if settings.batching.late_policy == "degrade":  # the fast fallback: language ID, no second encoder
                fallback = ModelWorker(
                    await asyncio.to_thread(load_routed, settings, settings.model.fallback, multilingual=False)
                )
        self._closers.extend(w.aclose for w in (primary, fallback) if w is not None)
        return primary, fallback

    async def _cannot_start(self, exc: ModelError) -> None:
        log.error("model_load_failed", error=str(exc))
        print(f"slmstream: cannot start: {exc}", file=sys.stderr)
        await self.app.crash(exc)

    async def _warm_up(self, scheduler: BatchScheduler, worker: ModelWorker) -> None:
        """A few real batches: onnxruntime's first runs are slow, and the service-time model needs data."""
        sizes = sorted({1, max(1, scheduler.main.max_batch // 2), scheduler.main.max_batch})
        routed = isinstance(worker.classifier, RoutedClassifier) and len(worker.classifier.routes) > 1
        for _ in range(2):
            for n in sizes:
                texts = [WARMUP_TEXT] * n
                if routed:  # every encoder runs (and is measured): every other text in another language
                    texts[1::2] = [WARMUP_OTHER_LANGUAGE] * (n // 2)
                results, seconds = await worker.classify(texts)
                scheduler.observe_service(results, seconds)

    # ---- the merger's state, from Kafka ----------------------------------------------------------------------
    def partials_assigned(self, partitions: Sequence[int]) -> None:
        """This worker owns (again) a partition of events.stats.partials: before it merges a partial, read back
        the latest stats records, whoever wrote them (the windows already merged, the spike baseline)."""
        self.assigned_partials = list(partitions)
        if partitions and self.analytics is not None:
            self._stats_restore = asyncio.ensure_future(self._restore_stats(self.analytics))

    async def _restore_stats(self, analytics: WindowAnalytics) -> None:
        settings = self.settings
        try:
            stats = await read_stats_tail(settings, settings.topics.stats, records_per_partition(settings))
        except Exception as exc:  # the merger goes on with what it knows: revisions may repeat, baselines start anew
            log.warning("stats_restore_failed", error=repr(exc))
            return
        log.info("stats_restored", windows=analytics.restore(stats))

    async def stats_restored(self) -> None:
        """Wait for the latest read-back of the stats topic (the merge agent, before each partial)."""
        while self._stats_restore is not None and not self._stats_restore.done():
            await asyncio.shield(self._stats_restore)

    # ---- stop ---------------------------------------------------------------------------------------------
    async def on_stop(self) -> None:
        """Drain, while the loops still run: wait until the broker has every result handed to the sink (the
        classify path's and the analytics' summaries, stats and alerts) and their inputs are acked."""
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(self._drain(), DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.warning("drain_timeout", timeout_s=DRAIN_TIMEOUT_S, detail="inputs not acked are read again")
        log.info("runtime_drained", seconds=round(time.monotonic() - t0, 3))

    async def _drain(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.drain()
        if self.analytics is not None:
            await self.analytics.drain()

    async def on_shutdown(self) -> None:
        """After the loops stopped: close the model threads (and the model-server connection)."""
        for close in reversed(self._closers):
            try:  # closing one must not keep the others open
                result = close()
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:
                log.warning("close_failed", what=repr(close), error=repr(exc))
        log.info("runtime_stopped", closed=len(self._closers))
        self._closers.clear()

    # ---- observation ----------------------------------------------------------------------------------------
    async def record_lag(self) -> None:
        consumer = self.app.consumer
        committed = committed_offsets(consumer)
        for tp in consumer.assignment():
            high: int | None = consumer.highwater(tp)  # annotated int by Faust, None before the first fetch
            if high is None:
                continue
            done = committed.get(tp) or 0
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(high - done, 0))
