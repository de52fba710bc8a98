"""The loop around the windows: enriched records in; summaries, stats and alerts out; acks after the broker's.

    agent ─submit()→ per-key windows ─close→ SummaryPlanner ─┬→ generator thread (abstractive, batched)
                   └→ global windows ─close→ stats, spikes   └→ classifier's encoder (extractive)
                                                              → outbox ─broker ack→ ack the window's records

Crash safety without Faust tables: an enriched record is acked only after the summary of the window holding it
has been acked by the broker (with summaries off: after its global window's stats record). Faust commits the
contiguous acked prefix, so after a crash every record of every window not yet summarized is read again, the
windows are rebuilt and their summaries emitted (duplicates possible, loss not). Stats and alert baselines are
process-local: rebuilt from the records read again, not restored. Records leave through the outbox
(pipeline/output/outbox.py: retries, ack after the broker's, a record that can never be sent stops `run()`).

Shutdown: `drain()` finishes the windows already closed (their summaries, stats and alerts stored and their
records acked); windows still open are left unacked, so whoever reads the partition next rebuilds them.

Time: every wait is on the injected `clock`/`sleep` (a generator batch's latest start included), so tests
drive it with a fake clock; `close_due()` closes what is due now, and `run()` calls it whenever that changes.

Memory is bounded: `submit` waits while `summaries.max_held` records are held (in open windows or awaiting
their summary's ack), which stops the agent pulling from Kafka; windows close early at their size bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson
import structlog

from pipeline.analytics.alerts import Spike, SpikeDetector
from pipeline.analytics.extractive import extractive_summary, sample_evenly
from pipeline.analytics.records import alert_record, summary_record
from pipeline.analytics.stats import label_counts, stats_record
from pipeline.analytics.summarizer import (
    GenerationTime,
    Job,
    SummaryPlanner,
    alert_prompt,
    prompt_texts,
    summary_prompt,
)
from pipeline.analytics.windows import TumblingWindows, Window, WindowEvent, key_of
from pipeline.config import Settings
from pipeline.model.base import Embedder, TextGenerator
from pipeline.output.observers import Delivered, Observer, Outcome
from pipeline.output.outbox import AckFn, Outbox, Outgoing, Sleep, run_ack
from pipeline.output.sink import Sink

log = structlog.get_logger(__name__)

UNFIT_TOKENS = 10**9  # token count of a prompt the generator cannot take
PARTIAL_WINDOW_SHARE = 0.1  # a first window whose first event came later than this share into it
MAX_SAMPLES = 5


@dataclass(slots=True)
class SummaryTask:
    window: Window


@dataclass(slots=True)
class AlertTask:
    spike: Spike
    window: Window
    texts: list[str]  # of the spiking label, for the explanation


class BadRecord(ValueError):
    pass


def parse_enriched(value: bytes | dict[str, Any], key_spec: str) -> tuple[str, WindowEvent]:
    """(window key, event) of an enriched record; BadRecord when it lacks what a window needs."""
    try:
        doc = orjson.loads(value) if isinstance(value, bytes | bytearray | memoryview) else value
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRecord("not a JSON object")
    analysis = doc.get("analysis")
    ident, text, ts = doc.get("id"), doc.get("text"), doc.get("ts")
    label = analysis.get("label") if isinstance(analysis, dict) else None
    if not (isinstance(ident, str) and isinstance(text, str) and isinstance(label, str)):
        raise BadRecord("needs string id, text and analysis.label")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise BadRecord("needs ts in epoch milliseconds")
    assert isinstance(analysis, dict)  # a label was found in it
    latency_ms = analysis.get("latency_ms")
    latency = latency_ms.get("total") if isinstance(latency_ms, dict) else None
    source = doc.get("source")
    event = WindowEvent(
        ident,
        text,
        label,
        source if isinstance(source, str) else "",
        ts,
        float(latency) if isinstance(latency, int | float) else None,
    )
    return key_of(doc, key_spec), event


class WindowAnalytics:
    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        embedder: Embedder,
        generator: TextGenerator | None,
        *,
        observers: Sequence[Observer] = (),
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        s, a = settings.summaries, settings.alerts
        if not (s.enabled or a.enabled):
            raise ValueError("neither summaries nor alerts are enabled")
        self.settings, self.embedder, self.generator = settings, embedder, generator
        self.observers, self.clock, self.sleep = tuple(observers), clock, sleep
        self.outbox = Outbox(sink, on_failure=lambda _: self._wake.set(), sleep=sleep)
        self.s, self.topics = s, settings.topics
        self.summaries_on, self.alerts_on = s.enabled, a.enabled
        self.keyed = TumblingWindows(
            s.window_s,
            s.grace_s,
            max_events=s.max_events,
            max_events_per_window=s.max_events_per_window,
            max_open_windows=s.max_open_windows,
            max_open_events=s.max_held // 2,
        )
        self.global_windows = TumblingWindows(
            s.window_s, s.grace_s, max_events_per_window=s.max_held + 1, max_open_events=s.max_held + 1
        )
        self.spikes = SpikeDetector(
            baseline_windows=a.baseline_windows,
            min_baseline_windows=a.min_baseline_windows,
            min_count=a.min_count,
            ratio=a.ratio,
            z=a.z,
        )
        self.gen_time = GenerationTime()
        self.planner = SummaryPlanner(
            self.gen_time,
            min_events_abstractive=s.min_events_abstractive,
            max_new_tokens=s.max_new_tokens,
            max_batch=min(s.max_batch, generator.max_batch) if generator else 1,
            enabled=generator is not None,
        )
        self.held = 0
        self._room = asyncio.Semaphore(s.max_held)
        self._wake = asyncio.Event()
        self._first_global = True
        self._queued_s = 0.0  # estimated generator seconds of the batches planned and not yet finished
        self._gen_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.emitted = {"summaries": 0, "abstractive": 0, "extractive": 0, "stats": 0, "alerts": 0, "bad": 0}

    # ---- intake -----------------------------------------------------------------------------------------
    async def submit(self, value: bytes | dict[str, Any], ack: AckFn) -> None:
        """Hold one enriched record in its windows; waits while `max_held` records are held."""
        try:
            key, event = parse_enriched(value, self.s.key)
        except BadRecord as exc:
            # Nothing to summarize; the record stays in events.enriched. Ack it so it cannot block commits.
            self.emitted["bad"] += 1
            log.warning("enriched_record_skipped", reason=str(exc))
            await run_ack(ack)
            return
        await self._room.acquire()
        self._hold(+1)
        event.ack = self._releasing(ack)
        now = self.clock()
        closed_keyed: list[Window] = []
        if self.summaries_on:
            closed_keyed = self.keyed.add(key, event, now)
            event_for_stats = replace(event, ack=None, extra_acks=[])  # the keyed window owns the ack
        else:
            event_for_stats = event
        closed_global = self.global_windows.add("", event_for_stats, now)
        if closed_keyed:
            self._spawn(self._summarize(closed_keyed))
        for w in closed_global:
            self._spawn(self._close_global(w))
        self._wake.set()

    def _releasing(self, ack: AckFn) -> Callable[[], Awaitable[None]]:
        async def done() -> None:
            await run_ack(ack)
            self._hold(-1)
            self._room.release()

        return done

    def _hold(self, n: int) -> None:
        self.held += n
        for o in self.observers:
            o.on_held("analytics", self.held)

    # ---- the loop ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Close windows as they fall due, until cancelled; raises the outbox's failure (a record that can
        never be sent). Wakes at the next close, on a submit, and at least once a second."""
        while True:
            self.outbox.raise_if_failed()
            self.close_due()
            now = self.clock()
            due = [t for t in (self.keyed.next_close_at(), self.global_windows.next_close_at()) if t is not None]
            timeout = min(max(min(due) - now, 0.01), 1.0) if due else 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def close_due(self) -> None:
        """Close the windows due at `clock()` and start their summaries, stats and alerts."""
        now = self.clock()
        closed = self.keyed.due(now) if self.summaries_on else []
        if closed:
            self._spawn(self._summarize(closed))
        for w in self.global_windows.due(now):
            self._spawn(self._close_global(w))

    async def drain(self) -> None:
        """Finish the windows already closed: wait for every summary/stats/alert task they started (and any
        those start) and for the outbox, so every such record is stored and acked (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.outbox.drain()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("analytics_task_failed", error=repr(task.exception()))

    # ---- summaries --------------------------------------------------------------------------------------
    async def _summarize(self, windows: list[Window]) -> None:
        jobs = await asyncio.to_thread(self._summary_jobs, windows)
        self._run_jobs(jobs)

    def _summary_jobs(self, windows: list[Window]) -> list[Job]:
        """Prompts and their token counts (off the event loop: tokenizing many windows takes a while)."""
        jobs = []
        for w in windows:
            prompt, tokens = "", 0
            if self.generator is not None and len(w.events) >= self.s.min_events_abstractive:
                texts = prompt_texts([e.text for e in w.events], self.s.prompt_events, sample_evenly)
                prompt = summary_prompt(texts)
                tokens = self._count_tokens(prompt)
            closed_at = w.closed_at if w.closed_at is not None else self.clock()
            jobs.append(Job(prompt, tokens, len(w.events), closed_at + self.s.budget_s, SummaryTask(w)))
        return jobs

    def _count_tokens(self, prompt: str) -> int:
        """The prompt's tokens; a prompt the generator refuses (too long) gets a count that never fits the
        budget, so its window is summarized extractively instead of stalling."""
        assert self.generator is not None
        try:
            return self.generator.count_tokens(prompt)
        except Exception as exc:
            log.warning("prompt_refused", error=repr(exc))
            return UNFIT_TOKENS

    def _run_jobs(self, jobs: list[Job]) -> None:
        now = self.clock()
        plan = self.planner.plan(jobs, now, now + self._queued_s)
        for batch in plan.batches:
            self._queued_s += self.planner.batch_time(batch)
            self._spawn(self._abstractive(batch, self.planner.batch_time(batch)))
        for job in plan.extractive:
            self._spawn(self._extractive(job))
        if jobs:
            log.info(
                "windows_closed",
                jobs=len(jobs),
                abstractive=sum(len(b) for b in plan.batches),
                batches=len(plan.batches),
                extractive=len(plan.extractive),
                held=self.held,
            )

    async def _abstractive(self, batch: list[Job], planned_s: float) -> None:
        assert self.generator is not None
        texts: list[str] | None = None
        # Generator calls run one at a time, in plan order. A batch that cannot start by its latest start time
        # (the earliest deadline minus its estimated time) goes extractive then, instead of waiting any longer.
        latest_start = min(j.deadline for j in batch) - self.planner.batch_time(batch)
        if not await self._acquire_generator_by(latest_start):
            log.info("generator_behind", batch=len(batch))
        else:
            try:
                if self.clock() <= latest_start:
                    texts = await self._generate(batch)
                else:
                    log.info("generator_behind", batch=len(batch))
            finally:
                self._gen_lock.release()
        self._queued_s = max(self._queued_s - planned_s, 0.0)
        for i, job in enumerate(batch):
            text = texts[i].strip() if texts is not None else ""
            if text:
                self._spawn(self._emit(job, text, "abstractive", self.generator.name))
            else:
                self._spawn(self._extractive(job))

    async def _acquire_generator_by(self, latest_start: float) -> bool:
        """Take the generator lock, giving up at `latest_start` on the injected clock (True: taken)."""
        acquire = asyncio.ensure_future(self._gen_lock.acquire())
        timer = asyncio.ensure_future(self.sleep(max(latest_start - self.clock(), 0.0)))
        try:
            await asyncio.wait({acquire, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            acquire.cancel()  # a no-op once it has the lock; a cancelled acquire hands the lock on (asyncio.Lock)
        try:
            return await acquire
        except asyncio.CancelledError:
            return False

    async def _generate(self, batch: list[Job]) -> list[str] | None:
        assert self.generator is not None
        try:
            texts, stats = await self.generator.generate([j.prompt for j in batch], self.s.max_new_tokens)
        except Exception as exc:  # a failing generator must not lose the summary: extractive instead
            log.warning("generator_failed", error=repr(exc), batch=len(batch))
            return None
        self.gen_time.observe(stats.prompt_tokens, stats.prefill_s, stats.new_tokens, stats.decode_s)
        log.info(
            "generated",
            prompts=len(batch),
            prompt_tokens=stats.prompt_tokens,
            new_tokens=stats.new_tokens,
            prefill_ms=round(stats.prefill_s * 1000, 1),
            decode_ms=round(stats.decode_s * 1000, 1),
        )
        return texts

    async def _extractive(self, job: Job) -> None:
        task = job.payload
        if isinstance(task, SummaryTask):
            text = await self._extract([e.text for e in task.window.events], self.s.extractive_k)
        else:
            text = self._alert_fallback(task.spike, await self._extract(task.texts, 1))
        await self._emit(job, text, "extractive", self.embedder.name)

    async def _extract(self, texts: list[str], k: int) -> str:
        picked = [texts[i] for i in sample_evenly(len(texts), self.s.extractive_max_texts)]
        try:
            embeddings = await self.embedder.embed(picked)
        except Exception as exc:  # no embeddings: the first texts still say something
            log.warning("embedder_failed", error=repr(exc))
            embeddings = np.ones((len(picked), 1), dtype=np.float32)
        summary, _ = extractive_summary(picked, embeddings, k)
        return summary

    @staticmethod
    def _alert_fallback(spike: Spike, example: str) -> str:
        return f"{spike.count} '{spike.label}' events vs about {spike.mean:.1f} per window before" + (
            f"; e.g. {example}" if example else ""
        )

    async def _emit(self, job: Job, text: str, method: str, model: str) -> None:
        task = job.payload
        if isinstance(task, SummaryTask):
            w = task.window
            now = self.clock()
            closed_at = w.closed_at if w.closed_at is not None else now
            record: dict[str, Any] = dict(
                summary_record(
                    w,
                    label_counts(w),
                    text,
                    method=method,
                    model=model,
                    latency_ms=(now - closed_at) * 1000.0,
                    budget_met=now <= job.deadline,
                    sample_ids=[e.id for e in w.events[:MAX_SAMPLES]],
                )
            )
            await self._deliver("summary", self.topics.summaries, w.key.encode(), record, ack=w, closed_at=closed_at)
        else:
            alert = dict(alert_record(task.spike, task.window, text, method=method, model=model))
            await self._deliver("alert", self.topics.alerts, task.spike.label.encode(), alert)

    async def _ack_window(self, window: Window) -> None:
        for event in window.events:
            for ack in event.acks():
                await run_ack(ack)

    # ---- stats and alerts -------------------------------------------------------------------------------
    async def _close_global(self, window: Window) -> None:
        record = dict(stats_record(window))
        await self._deliver("stats", self.topics.stats, None, record, ack=None if self.summaries_on else window)
        if not self.alerts_on:
            return
        by_label: dict[str, list[WindowEvent]] = {}
        for e in window.events:
            by_label.setdefault(e.label, []).append(e)
        # The first window of this process may have been seen only in part: when its first event came well after
        # its start (the stream, or this worker, started mid-window), its counts are partial and would make every
        # later window look like a spike. Such a window is checked but kept out of the baseline.
        first_ts_s = min(e.ts_ms for e in window.events) / 1000.0
        partial = self._first_global and first_ts_s > window.start_ms / 1000.0 + PARTIAL_WINDOW_SHARE * (
            (window.end_ms - window.start_ms) / 1000.0
        )
        self._first_global = False
        spikes = self.spikes.check(
            record["labels"],
            {label: [e.id for e in evs[:MAX_SAMPLES]] for label, evs in by_label.items()},
            join_baseline=not partial,
        )
        if not spikes:
            return
        jobs = await asyncio.to_thread(self._alert_jobs, spikes, window, by_label)
        self._run_jobs(jobs)

    def _alert_jobs(self, spikes: list[Spike], window: Window, by_label: dict[str, list[WindowEvent]]) -> list[Job]:
        closed_at = window.closed_at if window.closed_at is not None else self.clock()
        jobs = []
        for spike in spikes:
            texts = [e.text for e in by_label.get(spike.label, [])]
            prompt, tokens = "", 0
            if self.generator is not None:
                prompt = alert_prompt(spike.label, prompt_texts(texts, self.s.prompt_events, sample_evenly))
                tokens = self._count_tokens(prompt)
            # An explanation is one sentence whatever the window size: min_events does not apply.
            events = max(spike.count, self.s.min_events_abstractive)
            jobs.append(Job(prompt, tokens, events, closed_at + self.s.budget_s, AlertTask(spike, window, texts)))
        return jobs

    # ---- delivery -----------------------------------------------------------------------------------------
    async def _deliver(
        self,
        outcome: Outcome,
        topic: str,
        key: bytes | None,
        record: dict[str, Any],
        *,
        ack: Window | None = None,
        closed_at: float | None = None,
    ) -> None:
        """Write one record through the outbox and wait until the broker holds it; then ack the records of
        `ack` (the window it summarizes) and tell the observers."""
        out = Outgoing(topic, key, orjson.dumps(record))
        then_ack = [] if ack is None else [lambda: self._ack_window(ack)]

        def delivered() -> None:
            now = self.clock()
            self.emitted[{"summary": "summaries", "alert": "alerts", "stats": "stats"}[outcome]] += 1
            if outcome == "summary":
                self.emitted[record["method"]] += 1
            latencies = [max(now - closed_at, 0.0)] if closed_at is not None else []
            batch = Delivered(outcome, 1, now, latencies_s=latencies, records=[record])
            for o in self.observers:
                o.on_delivered(batch)

        await self.outbox.deliver([out], then_ack, then=delivered)
