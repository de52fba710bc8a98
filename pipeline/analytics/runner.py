"""The loop around the windows: by-key records in; summaries, partials, stats and alerts out; acks after the
broker's.

    by-key agent ─submit()→ per-key windows ─close→ SummaryPlanner ─┬→ generator thread (abstractive, batched)
                          └→ per-partition windows ─close→ partial  └→ classifier's encoder (extractive)
                                                    → events.stats.partials   → outbox ─broker ack→ acks
    partials agent ─submit_partial()→ StatsMerger (merge.py) ─complete→ stats record, spikes → alerts

Several workers: records reach `submit` from `events.enriched.by-key`, keyed by the window key, so every key's
windows are whole in the one worker that owns the key's partition; the per-partition partials of a window all
go to one partition of `events.stats.partials` (all under one key), whose owner merges them into each
window's one stats record and runs spike detection on the merged counts (README "Scale-out").

Crash safety without Faust tables: a by-key record is acked only after the summary of its key's window and
its partition's partial of that window have both been acked by the broker; a partial is acked only after the
merged stats record (and its alerts) are. Faust commits the contiguous acked prefix, so after a crash every
record of every window not yet done is read again, the windows are rebuilt and their records emitted again
(duplicates possible, loss not: each record says its `revision`, readers keep the highest). The spike
baselines are rebuilt from the stats topic at start (`restore`). Records leave through the outbox
(pipeline/output/outbox.py: retries, ack after the broker's, a record that can never be sent stops `run()`).

Rebalances: `revoke()` drops the open windows of by-key partitions taken away (not acked, their next owner reads
them again) and `assign()` records when a partition became ours: from then on, every window close emits a
partial for it, an empty one if it had no record, so the merger knows when a window is complete.

Shutdown: `drain()` finishes the windows already closed (their summaries, stats and alerts stored and their
records acked); windows still open are left unacked, so whoever reads the partition next rebuilds them.

Time: every wait is on the injected `clock`/`sleep` (a generator batch's latest start included), so tests
drive it with a fake clock; `close_due()` closes what is due now, and `run()` calls it whenever that changes.

Memory is bounded: `submit` waits while `summaries.max_held` records are held (in open windows or awaiting
their summary's and partial's acks), which stops the agent pulling from Kafka. Keyed windows close early at
their size bounds; a record stays held until its partition's window closes by time (its partial), so at most
`max_held` records of one window's time range are taken in before it closes. The merger holds a few partials
per window (counts and up to 10 texts per label) until the window is merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson
import structlog

from pipeline.analytics.alerts import Spike, SpikeDetector
from pipeline.analytics.extractive import extractive_summary, labelled_extractive_summary, sample_evenly
from pipeline.analytics.grounding import facts_words, ungrounded_terms
from pipeline.analytics.merge import PARTIALS_KEY, MergedWindow, StatsMerger, empty_partial, partial_record
from pipeline.analytics.records import alert_record, summary_record
from pipeline.analytics.stats import label_counts
from pipeline.analytics.summarizer import (
    GenerationTime,
    Job,
    SummaryPlanner,
    alert_prompt,
    dominant_labels,
    prompt_texts,
    several_labels,
    summary_prompt,
    unread_language,
)
from pipeline.analytics.windows import TumblingWindows, Window, WindowEvent, key_of
from pipeline.config import Settings
from pipeline.facts.prompt import facts_lines
from pipeline.model.base import Embedder, TextGenerator
from pipeline.model.language import LanguageId
from pipeline.output.observers import Delivered, Observer, Outcome
from pipeline.output.outbox import AckFn, Outbox, Outgoing, Sleep, run_ack
from pipeline.output.sink import Sink

log = structlog.get_logger(__name__)

UNFIT_TOKENS = 10**9  # token count of a prompt the generator cannot take
PARTIAL_WINDOW_SHARE = 0.1  # a first window whose first event came later than this share into it
MAX_SAMPLES = 5
MAX_UNGROUNDED_SHOWN = 5  # terms named in a record's `reason`


@dataclass(slots=True)
class SummaryTask:
    window: Window


@dataclass(slots=True)
class AlertTask:
    spike: Spike
    window: Window
    texts: list[str]  # of the spiking label, for the explanation
    done: Countdown | None = None  # acks the window's partials once every alert and the stats are stored
    facts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # of the sampled events' entities


@dataclass(slots=True)
class Countdown:
    """Runs `acks` once `one()` has been called `n` times (each output they depend on is stored)."""

    n: int
    acks: list[AckFn] = field(default_factory=list)

    async def one(self) -> None:
        self.n -= 1
        if self.n == 0:
            for ack in self.acks:
                await run_ack(ack)


class HeldRecord:
    """One by-key record held in its windows: acked once each window it is in has its output stored
    (its key's summary, its partition's partial), unless its partition was revoked meanwhile."""

    __slots__ = ("ack", "waiting", "release", "dropped")

    def __init__(self, ack: AckFn, waiting: int, release: Callable[[HeldRecord], None]) -> None:
        self.ack, self.waiting, self.release, self.dropped = ack, waiting, release, False

    async def one_done(self) -> None:
        if self.dropped or self.waiting <= 0:
            return
        self.waiting -= 1
        if self.waiting == 0:
            await run_ack(self.ack)
            self.release(self)

    def drop(self) -> None:
        """The partition went to another worker: never ack (it reads the record again), free the room now."""
        if not self.dropped and self.waiting > 0:
            self.dropped = True
            self.release(self)


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
    event.facts = joined_facts(doc.get("facts"))
    return key_of(doc, key_spec), event


def joined_facts(doc: Any) -> tuple[str, dict[str, Any]] | None:
    """(entity, values) of an enriched record's `facts` (schemas/enriched.schema.json); None if absent or
    not of that shape (the record is summarized without them)."""
    if not isinstance(doc, dict):
        return None
    entity, values = doc.get("entity"), doc.get("values")
    if isinstance(entity, str) and entity and isinstance(values, dict):
        return entity, values
    return None


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
        language_id: LanguageId | None = None,
        generator_languages: frozenset[str] | None = None,
    ) -> None:
        s, a = settings.summaries, settings.alerts
        if not (s.enabled or a.enabled):
            raise ValueError("neither summaries nor alerts are enabled")
        self.settings, self.embedder, self.generator = settings, embedder, generator
        # A window whose texts are in a language the generator does not read is summarized extractively.
        self.language_id, self.generator_languages = language_id, generator_languages
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
        # Keyed by partition: each by-key partition's records of a window, for its partial counts.
        self.partition_windows = TumblingWindows(
            s.window_s, s.grace_s, max_events_per_window=s.max_held + 1, max_open_events=s.max_held + 1
        )
        self.merger = StatsMerger(settings.topics.partitions, s.stats_wait_s)
        self.owned: dict[int, tuple[float, int]] = {}  # by-key partition → (assigned at, next window start)
        self._held_records: dict[int, set[HeldRecord]] = {}  # by partition: what revoke() must let go
        self._checking: set[int] = set()  # merged windows whose spike check has not run yet
        self._progress = asyncio.Event()  # set (and replaced) whenever a merge or a check moves on
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
        self._queued_s = 0.0  # estimated generator seconds of the batches planned and not yet finished
        self._gen_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.emitted = {"summaries": 0, "abstractive": 0, "extractive": 0, "stats": 0, "alerts": 0, "bad": 0}

    # ---- intake -----------------------------------------------------------------------------------------
    async def submit(self, value: bytes | dict[str, Any], ack: AckFn, partition: int = 0) -> None:
        """Hold one by-key record (read from `partition`) in its windows; waits while `max_held` are held.
        A record of a partition not (or no longer) ours is left alone: its owner reads it."""
        if partition not in self.owned:
            return
        try:
            key, event = parse_enriched(value, self.s.key)
        except BadRecord as exc:
            # Nothing to summarize; the record stays in the topic. Ack it so it cannot block commits.
            self.emitted["bad"] += 1
            log.warning("enriched_record_skipped", reason=str(exc))
            await run_ack(ack)
            return
        await self._room.acquire()
        if partition not in self.owned:  # revoked while this waited for room
            self._room.release()
            return
        self._hold(+1)
        held = HeldRecord(ack, 2 if self.summaries_on else 1, self._release)
        self._held_records.setdefault(partition, set()).add(held)
        event.ack, event.partition = held.one_done, partition
        now = self.clock()
        closed_keyed: list[Window] = []
        if self.summaries_on:
            closed_keyed = self.keyed.add(key, event, now)
        closed_parts = self.partition_windows.add(str(partition), replace(event, extra_acks=[]), now)
        if closed_keyed:
            self._spawn(self._summarize(closed_keyed))
        for w in closed_parts:
            self._spawn(self._send_partial(w))
        self._wake.set()

    def _release(self, held: HeldRecord) -> None:
        for records in self._held_records.values():
            records.discard(held)
        self._hold(-1)
        self._room.release()

    async def submit_partial(self, value: bytes, ack: AckFn, source: int = 0) -> None:
        """Take one partial (read from stats-partials partition `source`) for the merge of its window."""
        try:
            doc = orjson.loads(value)
            ready = self.merger.add(doc, ack, source, self.clock())
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self.emitted["bad"] += 1
            log.warning("stats_partial_skipped", reason=repr(exc))
            await run_ack(ack)
            return
        self._take_merged(ready)
        self._wake.set()

    def _take_merged(self, ready: list[MergedWindow | list[AckFn]]) -> None:
        for item in ready:
            if isinstance(item, MergedWindow):
                self._checking.add(item.start_ms)
                self._spawn(self._emit_stats(item))
            else:
                self._spawn(self._run_acks(item))
        if ready:
            self._progressed()

    def _progressed(self) -> None:
        """Wake what waits for older windows to be checked (a broadcast: every waiter re-checks)."""
        self._progress.set()
        self._progress = asyncio.Event()

    async def _after_older_windows(self, start_ms: int) -> None:
        """Spikes are checked in window order: wait while an older window with events is still being merged
        (its partials not all in, at most `stats_wait_s`) or checked, so it is in this window's baseline."""
        while self.merger.pending_before(start_ms) or any(s < start_ms for s in self._checking):
            await self._progress.wait()

    @staticmethod
    async def _run_acks(acks: list[AckFn]) -> None:
        for ack in acks:
            await run_ack(ack)

    # ---- rebalances -------------------------------------------------------------------------------------
    def assign(self, partitions: Sequence[int]) -> None:
        """By-key partitions now ours: each window close emits a partial for each (an empty one when it had no
        record), from the oldest window the merger may still wait for on: the previous owner may have lost the
        partition (or died) before that window's close, and a partial that adds nothing is dropped there."""
        now = self.clock()
        lookback_s = self.s.grace_s + self.s.window_s + self.s.stats_wait_s
        first = self.partition_windows.start_of(int((now - lookback_s) * 1000))
        for p in partitions:
            self.owned.setdefault(p, (now, first))
        self._wake.set()

    def revoke(self, partitions: Sequence[int]) -> int:
        """By-key partitions taken away: drop their open windows and let their records go unacked (the next
        owner reads them again). Returns how many records were let go."""
        gone = set(partitions)
        for p in gone:
            self.owned.pop(p, None)
        self.keyed.drop(lambda w: not w.events or w.events[0].partition not in gone)
        self.partition_windows.drop(lambda w: int(w.key) not in gone)
        dropped = 0
        for p in gone:
            for held in list(self._held_records.pop(p, ())):
                held.drop()
                dropped += 1
        return dropped

    def revoke_partials(self, sources: Sequence[int]) -> int:
        """Stats-partials partitions taken away: forget their partials (the next owner merges them)."""
        dropped = self.merger.revoke(sources)
        self._progressed()
        return dropped

    def restore(self, stats: Sequence[dict[str, Any]]) -> int:
        """Rebuild the merged windows and the spike baseline from records read back from the stats topic."""
        kept = self.merger.restore(stats)
        for r in kept:
            if r.get("final", True) and isinstance(r.get("labels"), dict):
                self.spikes.remember(int(r["window"]["start_ms"]), r["labels"])
        return len(kept)

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
            due = [
                t
                for t in (
                    self.keyed.next_close_at(),
                    self.partition_windows.next_close_at(),
                    self.merger.next_due_at(),
                    self._next_empty_at(),
                )
                if t is not None
            ]
            timeout = min(max(min(due) - now, 0.01), 1.0) if due else 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def close_due(self) -> None:
        """Close the windows due at `clock()` and start their summaries, partials, merged stats and alerts."""
        now = self.clock()
        closed = self.keyed.due(now) if self.summaries_on else []
        if closed:
            self._spawn(self._summarize(closed))
        for w in self.partition_windows.due(now):
            self._spawn(self._send_partial(w))
        self._empty_partials(now)
        self._take_merged(self.merger.due(now))

    def _empty_close_at(self, assigned_at: float, start_ms: int) -> float:
        # As for a window rebuilt after a restart: not before `grace_s` after the partition became ours, so
        # records read again after a rebalance are in before the partition's partial is decided to be empty.
        return max((start_ms + self.partition_windows.window_ms) / 1000.0, assigned_at) + self.s.grace_s

    def _next_empty_at(self) -> float | None:
        times = [self._empty_close_at(a, start) for a, start in self.owned.values()]
        return min(times) if times else None

    def _empty_partials(self, now: float) -> None:
        """An empty partial for each owned partition and closed window it had no record in."""
        ms = self.partition_windows.window_ms
        for p, (assigned_at, start) in list(self.owned.items()):
            while self._empty_close_at(assigned_at, start) <= now:
                if not self.partition_windows.has(str(p), start):
                    self._spawn(self._deliver_partial(empty_partial(p, start, start + ms), []))
                start += ms
            self.owned[p] = (assigned_at, start)

    async def _send_partial(self, window: Window) -> None:
        partition = int(window.key)
        start = self.partition_windows.start_of(window.start_ms)
        doc = partial_record(window, partition, start, start + self.partition_windows.window_ms)
        acks: list[AckFn] = [a for e in window.events for a in e.acks()]
        await self._deliver_partial(doc, acks)

    async def _deliver_partial(self, doc: dict[str, Any], acks: list[AckFn]) -> None:
        out = Outgoing(self.topics.stats_partials, PARTIALS_KEY, orjson.dumps(doc))
        await self.outbox.deliver([out], [lambda: self._run_acks(acks)])

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
            prompt, tokens, lang = "", 0, ""
            reason = several_labels([e.label for e in w.events])  # then per label, extractive
            if self.generator is not None and len(w.events) >= self.s.min_events_abstractive and not reason:
                texts = prompt_texts([e.text for e in w.events], self.s.prompt_events, sample_evenly)
                lang, reason = self._language(texts)
                if not reason:
                    prompt = summary_prompt(texts, facts=self._facts_lines(w), noun=self.settings.facts.entity_noun)
                    tokens = self._count_tokens(prompt)
            closed_at = w.closed_at if w.closed_at is not None else self.clock()
            deadline = closed_at + self.s.budget_s
            jobs.append(Job(prompt, tokens, len(w.events), deadline, SummaryTask(w), lang=lang, reason=reason))
        return jobs

    def _language(self, texts: list[str]) -> tuple[str, str]:
        """(the texts' language, why the generator must not write about them: "" if it may); called off the
        event loop with the jobs (language ID of a prompt's few texts: tens of microseconds each)."""
        if self.language_id is None or not texts:
            return "", ""
        return unread_language(self.language_id.detect(texts), self.generator_languages)

    def _facts_lines(self, window: Window) -> list[str]:
        """The facts of the window's entities for its prompt, bounded (pipeline/facts/prompt.py)."""
        f = self.settings.facts
        return facts_lines((e.facts for e in window.events), f.prompt_entities, f.prompt_fact_chars, f.entity_noun)

    def _ungrounded(self, job: Job, text: str) -> list[str]:
        """The names and numbers of a generated `text` that neither the window's messages nor its facts hold
        (pipeline/analytics/grounding.py); [] when the check is off. Off the event loop: a window may be big."""
        if not self.s.grounding_check:
            return []
        task = job.payload
        if isinstance(task, SummaryTask):
            events = task.window.events
            sources = [e.text for e in events] + self._facts_lines(task.window)
            for e in events:
                if e.facts is not None:
                    sources.append(e.facts[0])
                    sources.extend(facts_words(e.facts[1]))
        else:
            sources = [*task.texts, task.spike.label, task.spike.label.replace("_", " ")]
            f = self.settings.facts
            sources.extend(facts_lines(task.facts, len(task.facts), f.prompt_fact_chars, f.entity_noun))
            for entity, values in task.facts:
                sources.append(entity)
                sources.extend(facts_words(values))
        return ungrounded_terms(text, sources)

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
                self._spawn(self._grounded_or_extractive(job, text))
            else:
                self._spawn(self._extractive(job))

    async def _grounded_or_extractive(self, job: Job, text: str) -> None:
        """A generated text that names something its sources do not is replaced by the extractive one."""
        assert self.generator is not None
        terms = await asyncio.to_thread(self._ungrounded, job, text)
        if terms:
            log.info("summary_ungrounded", terms=len(terms))  # the terms themselves go in the record, not the log
            await self._extractive(job, reason="ungrounded: " + ", ".join(terms[:MAX_UNGROUNDED_SHOWN]))
        else:
            await self._emit(job, text, "abstractive", self.generator.name)

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

    async def _extractive(self, job: Job, reason: str | None = None) -> None:
        reason = reason or job.reason or None  # the record says why, when there is more to say than its size
        task = job.payload
        if isinstance(task, SummaryTask):
            events = task.window.events
            text = await self._extract([e.text for e in events], self.s.extractive_k, [e.label for e in events])
        else:
            example = await self._extract(task.texts, 1) if task.texts else ""
            text = self._alert_fallback(task.spike, example)
        await self._emit(job, text, "extractive", self.embedder.name, reason)

    async def _extract(self, texts: list[str], k: int, labels: list[str] | None = None) -> str:
        """The k most central texts; with `labels`, per dominant label when there are several."""
        sample = sample_evenly(len(texts), self.s.extractive_max_texts)
        picked = [texts[i] for i in sample]
        try:
            embeddings = await self.embedder.embed(picked)
        except Exception as exc:  # no embeddings: the first texts still say something
            log.warning("embedder_failed", error=repr(exc))
            embeddings = np.ones((len(picked), 1), dtype=np.float32)
        groups = dominant_labels(Counter(labels)) if labels is not None else []
        if labels is not None and len(groups) >= 2:
            summary, _ = labelled_extractive_summary(picked, [labels[i] for i in sample], embeddings, k, groups)
        else:
            summary, _ = extractive_summary(picked, embeddings, k)
        return summary

    @staticmethod
    def _alert_fallback(spike: Spike, example: str) -> str:
        return f"{spike.count} '{spike.label}' events vs about {spike.mean:.1f} per window before" + (
            f"; e.g. {example}" if example else ""
        )

    async def _emit(self, job: Job, text: str, method: str, model: str, reason: str | None = None) -> None:
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
                    reason=reason,
                )
            )
            _with_language(record, job)
            acks = [a for e in w.events for a in e.acks()]
            await self._deliver("summary", self.topics.summaries, w.key.encode(), record, acks, closed_at=closed_at)
        else:
            alert = dict(alert_record(task.spike, task.window, text, method=method, model=model, reason=reason))
            _with_language(alert, job)
            done = [task.done.one] if task.done is not None else []
            await self._deliver("alert", self.topics.alerts, task.spike.label.encode(), alert, done)

    # ---- stats and alerts -------------------------------------------------------------------------------
    async def _emit_stats(self, merged: MergedWindow) -> None:
        """One merged window: spikes on its counts (against the windows before it), its stats record, its
        alerts; the partials it was merged from are acked once all of them are stored."""
        record, start = merged.record, merged.start_ms
        spikes: list[Spike] = []
        try:
            if self.alerts_on:
                await self._after_older_windows(start)
                spikes = self._check_spikes(merged)
        finally:
            self._checking.discard(start)
            self._progressed()
        log.info(
            "stats_merged",
            window_start_ms=start,
            events=record["events"],
            partitions=record["partitions"],
            final=record["final"],
            revision=record["revision"],
            spikes=[sp.label for sp in spikes],
        )
        done = Countdown(1 + len(spikes), merged.acks)
        await self._deliver("stats", self.topics.stats, str(start).encode(), record, [done.one])
        if not spikes:
            return
        window = Window("", start, merged.end_ms, 0, self.clock(), self.clock(), reason="time", closed_at=self.clock())
        jobs = await asyncio.to_thread(self._alert_jobs, spikes, window, merged.texts, done, merged.facts)
        self._run_jobs(jobs)

    def _check_spikes(self, merged: MergedWindow) -> list[Spike]:
        """The new spikes of a merged window against the windows before it; records them in its stats record."""
        record, start = merged.record, merged.start_ms
        # The first window of a stream may have been seen only in part: when its first event came well after
        # its start, its counts would make every later window look like a spike. Such a window is checked but
        # kept out of the baseline (with a baseline rebuilt from the stats topic, "first" means of the stream).
        length_ms = merged.end_ms - start
        partial = (
            self.spikes.windows_before(start) == 0
            and merged.first_ts_ms is not None
            and merged.first_ts_ms > start + PARTIAL_WINDOW_SHARE * length_ms
        )
        found = self.spikes.check(
            record["labels"],
            {label: ids[:MAX_SAMPLES] for label, ids in merged.sample_ids.items()},
            join_baseline=not partial,
            window=start,
        )
        already = self.merger.alerted(start)
        spikes = [sp for sp in found if sp.label not in already]  # a revision does not alert again
        self.merger.mark_alerted(start, [sp.label for sp in spikes])
        record["spikes"] = sorted(already | {sp.label for sp in spikes})
        return spikes

    def _alert_jobs(
        self,
        spikes: list[Spike],
        window: Window,
        texts_by_label: dict[str, list[str]],
        done: Countdown,
        facts_by_label: dict[str, list[tuple[str, dict[str, Any]]]] | None = None,
    ) -> list[Job]:
        closed_at = window.closed_at if window.closed_at is not None else self.clock()
        jobs = []
        f = self.settings.facts
        for spike in spikes:
            texts = texts_by_label.get(spike.label, [])
            facts = (facts_by_label or {}).get(spike.label, [])
            prompt, tokens, lang, reason = "", 0, "", ""
            if self.generator is not None:
                picked = prompt_texts(texts, self.s.prompt_events, sample_evenly)
                lang, reason = self._language(picked)
                if not reason:
                    lines = facts_lines(facts, f.prompt_entities, f.prompt_fact_chars, f.entity_noun)
                    prompt = alert_prompt(spike.label, picked, lines, f.entity_noun)
                    tokens = self._count_tokens(prompt)
            # An explanation is one sentence whatever the window size: min_events does not apply.
            events = max(spike.count, self.s.min_events_abstractive)
            task = AlertTask(spike, window, texts, done, facts)
            jobs.append(Job(prompt, tokens, events, closed_at + self.s.budget_s, task, lang=lang, reason=reason))
        return jobs

    # ---- delivery -----------------------------------------------------------------------------------------
    async def _deliver(
        self,
        outcome: Outcome,
        topic: str,
        key: bytes | None,
        record: dict[str, Any],
        acks: Sequence[AckFn] = (),
        *,
        closed_at: float | None = None,
    ) -> None:
        """Write one record through the outbox and wait until the broker holds it; then run `acks` (of what it
        depends on) and tell the observers."""
        out = Outgoing(topic, key, orjson.dumps(record))
        then_ack = [lambda: self._run_acks(list(acks))] if acks else []

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


def _with_language(record: dict[str, Any], job: Job) -> None:
    """The texts' language, when known (why the generator did not write the record is `reason`, set by the
    caller: the job's own reason or the grounding check's)."""
    if job.lang:
        record["lang"] = job.lang
