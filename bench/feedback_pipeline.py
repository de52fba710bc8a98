"""`bench feedback --mode pipeline`: the learning curve through a running worker.

    bench ─{"text","label"}→ events.feedback ─→ worker (store → retrain → swap) ─┐
    bench ─test events→ events ─→ worker (classify with the head) ─→ events.enriched ─→ bench (labels, head)

Per step (labels per class 0, 8, 32, ...): the step's new examples go to the feedback topic as
`{"text", "label", "by"}` records (the contract of schemas/feedback.schema.json); probe events go through the
worker until an enriched record names a head trained on all the examples sent so far (`head-<examples>-...`,
pipeline/learning/store.py); then the held-out test events go through the worker and their labels are read
from events.enriched. A test record labelled by another head than the one waited for is counted and reported
(it cannot happen with one worker and no new feedback; the count says so).

A fresh broker and one worker, with the set's labels as the taxonomy (a config file in the run folder), the
late policy `process` and a deadline long enough that no event is deferred on a loaded machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.feedback import CurveStep, Prepared, accuracy
from bench.machine import BenchBroker, free_port, stop_worker_and_broker
from pipeline.config import Settings, config_path
from pipeline.kafka_client import ensure_topics
from pipeline.worker_process import WorkerProcess

HEAD_TIMEOUT_S = 300.0  # feedback sent → a record labelled by its head (a busy 2-core machine encodes slowly)
TEST_TIMEOUT_S = 300.0
PROBE_EVERY_S = 1.0
PROBE_TEXT = "a probe event: which head labels it?"


def worker_config(settings: Settings, prep: Prepared, run_dir: Path) -> Path:
    """The run's YAML: the configured one with the set's labels (descriptions only) as the taxonomy."""
    source = config_path()
    doc: dict[str, Any] = (yaml.safe_load(source.read_text(encoding="utf-8")) or {}) if source.exists() else {}
    doc["labels"] = {name: {"description": d} for name, d in prep.data.descriptions.items()}
    path = run_dir / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


class EnrichedReader:
    """events.enriched from the start, in the background: the latest record of each event id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        self.records: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    doc = orjson.loads(r.value or b"{}")
                    self.records[str(doc.get("id"))] = doc
                self._arrived.set()

    async def wait_for(self, ids: Sequence[str], timeout: float) -> dict[str, dict[str, Any]]:
        """The records of `ids`; raises RuntimeError if some have not arrived within `timeout`."""
        deadline = time.monotonic() + timeout
        while (missing := [i for i in ids if i not in self.records]) and time.monotonic() < deadline:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=1.0)
        if missing:
            raise RuntimeError(f"{len(missing)} of {len(ids)} events not in events.enriched after {timeout:.0f} s")
        return {i: self.records[i] for i in ids}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()


class PipelineRun:
    """A broker and a worker for one curve; `stop()` always takes both down."""

    def __init__(self, settings: Settings, prep: Prepared, engine: str, run_dir: Path) -> None:
        self.settings, self.prep, self.engine, self.run_dir = settings, prep, engine, run_dir
        self.broker: BenchBroker | None = None
        self.worker: WorkerProcess | None = None
        self.bootstrap = ""

    def start(self, ready_timeout: float = 180.0) -> None:
        t = self.settings.topics
        self.broker = BenchBroker(self.engine, self.run_dir)
        status = self.broker.start()
        self.bootstrap = status.bootstrap
        topics = [t.events, t.enriched, t.dlq, t.deferred, t.feedback]
        asyncio.run(ensure_topics(self.bootstrap, topics, t.partitions, t.replicas))
        examples = len(self.prep.names) * max(len(pool) for pool in self.prep.split.pools.values())
        env = {
            "SLMSTREAM_CONFIG": str(worker_config(self.settings, self.prep, self.run_dir).resolve()),
            "SLMSTREAM_BROKER": status.url,
            "SLMSTREAM_APP_ID": f"bench-feedback-{self.run_dir.name}",
            "SLMSTREAM_LOG_LEVEL": "warning",
            "SLMSTREAM_LOG_FORMAT": "json",
            "SLMSTREAM_BATCHING__LATE_POLICY": "process",
            "SLMSTREAM_BATCHING__BUDGET_MS": "60000",  # a busy machine: no test event deferred or degraded
            "SLMSTREAM_LEARNING__ENABLED": "true",
            # One encoder: a head is trained for the default encoder's embeddings; events routed by language to
            # the multilingual one stay zero-shot (README "Teaching the classifier"), which is not the curve.
            "SLMSTREAM_MODEL__MULTILINGUAL": "",
            "SLMSTREAM_LEARNING__RETRAIN_QUIET_S": "0.5",
            "SLMSTREAM_LEARNING__RETRAIN_MAX_DELAY_S": "5",
            "SLMSTREAM_LEARNING__MAX_EXAMPLES": str(max(examples, 1)),
        }
        self.worker = WorkerProcess(env, self.run_dir / "worker.log", self.run_dir / "worker-data", free_port())
        self.worker.start()
        self.worker.wait_ready(ready_timeout)

    def stop(self) -> None:
        stop_worker_and_broker(self.worker, self.broker)

    def measure(self, curve: Sequence[CurveStep], note: Callable[[str], None] = lambda _: None) -> None:
        """Fill each step's pipeline_* fields (the steps come from the in-process curve, same examples)."""
        if self.worker is None:
            self.start()
        asyncio.run(self._measure(curve, note))

    async def _measure(self, curve: Sequence[CurveStep], note: Callable[[str], None]) -> None:
        t = self.settings.topics
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        reader = EnrichedReader(self.bootstrap, t.enriched)
        await producer.start()
        await reader.start()
        try:
            sent_per_label = 0
            for step in curve:
                new = self.prep.examples(step.per_label, start=sent_per_label)
                t0 = time.monotonic()
                for e in new:
                    doc = {"text": e.text, "label": e.label, "by": "bench-feedback"}
                    await producer.send(t.feedback, orjson.dumps(doc), key=e.label.encode())
                await producer.flush()
                sent_per_label = step.per_label
                prefix = f"head-{step.examples}-" if step.examples else None
                head = await self._await_head(producer, reader, prefix, step.per_label)
                step.pipeline_head = head
                step.pipeline_wait_s = time.monotonic() - t0 if new else None
                labels, others = await self._test(producer, reader, step.per_label, head)
                step.pipeline_accuracy = accuracy(labels, self.prep.split.test_labels)
                step.pipeline_other_heads = others
                if step.labels:
                    step.pipeline_agreement = accuracy(labels, step.labels)
                agree = f", same label as in-process for {step.pipeline_agreement:.1%}" if step.labels else ""
                note(
                    f"{step.per_label} per label: through the pipeline {step.pipeline_accuracy:.3f}{agree} "
                    f"(head {head or 'none: zero-shot'}, {len(new)} feedback records"
                    + (f", labelled by it {step.pipeline_wait_s:.1f} s after the first was sent)" if new else ")")
                )
        finally:
            await reader.stop()
            await producer.stop()

    async def _await_head(
        self, producer: AIOKafkaProducer, reader: EnrichedReader, prefix: str | None, step: int
    ) -> str | None:
        """Probe events until one comes back labelled by a head whose version starts with `prefix` (None: the
        zero-shot classifier, no head); that head's version."""
        deadline = time.monotonic() + HEAD_TIMEOUT_S
        n = 0
        last: str | None = None
        while time.monotonic() < deadline:
            if self.worker is not None:
                self.worker.check_alive()
            probe_id = f"probe-{step}-{n}"
            n += 1
            event = {"id": probe_id, "text": PROBE_TEXT, "ts": int(time.time() * 1000)}
            await producer.send_and_wait(self.settings.topics.events, orjson.dumps(event))
            record = (await reader.wait_for([probe_id], HEAD_TIMEOUT_S))[probe_id]
            last = record["analysis"].get("head")
            if (prefix is None and last is None) or (prefix is not None and last and last.startswith(prefix)):
                return last
            await asyncio.sleep(PROBE_EVERY_S)
        raise RuntimeError(f"no record labelled by head {prefix}* after {HEAD_TIMEOUT_S:.0f} s (last: {last})")

    async def _test(
        self, producer: AIOKafkaProducer, reader: EnrichedReader, step: int, head: str | None
    ) -> tuple[list[str], int]:
        """The test events through the worker: their labels in events.enriched, and how many records another
        head labelled."""
        s = self.prep.split
        ids = [f"test-{step}-{i}" for i in range(len(s.test_texts))]
        now = int(time.time() * 1000)
        for i, text in zip(ids, s.test_texts, strict=True):
            await producer.send(self.settings.topics.events, orjson.dumps({"id": i, "text": text, "ts": now}))
        await producer.flush()
        records = await reader.wait_for(ids, TEST_TIMEOUT_S)
        labels = [records[i]["analysis"]["label"] for i in ids]
        others = sum(records[i]["analysis"].get("head") != head for i in ids)
        return labels, others
