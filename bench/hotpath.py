"""`slmstream bench hotpath` (the command: bench/cli.py): the classify path's CPU per event in one process,
without a broker, so that a cut can be measured on a machine too busy for `bench identity` to tell.

    records (aiokafka ConsumerRecords) ─EventReader.hand_in→ BatchScheduler (identity model, its thread)
        → enriched records → ProducerSink (real aiokafka record batches) → a producer that acks at once
        → the reader's offsets done

The worker's own code, unchanged, end to end: validation, `Event`/`Work`, the deadline batcher, the model thread
hop, the records, murmur2 partitioning, record-batch appends and builds, the outbox's acks, the observers
(metrics and dashboard) and the offset bookkeeping, under the worker's collector settings. Not in it:
aiokafka's fetch parsing and the sockets (the aiokafka-alone loop of `bench identity` measures those). For an
instruction count, run it under `valgrind --tool=callgrind --instr-atstart=no` with `--callgrind`: it switches
collection on for the measured part only.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import ConsumerRecord

from bench.events import make_events
from pipeline.config import Settings
from pipeline.gc_tuning import settle_heap

FETCH_RECORDS = 500  # records handed in per "fetch", across the partitions
BATCH_BYTES = 16384  # aiokafka's default batch size


class AckingProducer:
    """What ProducerSink asks of Faust's producer: record batches are built as the sender does, and acked at
    once."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.batches = 0

    def _ensure_producer(self) -> AckingProducer:  # what kafka_transport.aiokafka_producer() asks Faust's for
        return self

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(BATCH_BYTES, 0, is_transactional=False)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[None]:
        builder._build()  # noqa: SLF001  aiokafka 0.14: the bytes the sender would write (CRC included)
        self.batches += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _App:
    def __init__(self, producer: AckingProducer) -> None:
        self.producer = producer


def input_records(settings: Settings, docs: Sequence[dict], n: int) -> dict[TopicPartition, list[Any]]:
    """n sample events as the reader gets them from aiokafka, spread over the topic's partitions."""
    now = int(time.time() * 1000)
    parts = settings.topics.partitions
    tps = [TopicPartition(settings.topics.events, p) for p in range(parts)]
    out: dict[TopicPartition, list[Any]] = {tp: [] for tp in tps}
    for i, ev in enumerate(make_events(docs, n, "hot")):
        tp = tps[i % parts]
        value = ev.encode(now)
        records = out[tp]
        size = len(ev.key or b"")
        records.append(
            ConsumerRecord(tp.topic, tp.partition, len(records), now, 0, ev.key, value, None, size, len(value), ())
        )
    return out


async def run_hotpath(
    settings: Settings, docs: Sequence[dict], events: int, *, callgrind: bool = False
) -> dict[str, Any]:
    """Hand `events` sample events to the worker's path a fetch at a time and wait until every offset is done;
    CPU and wall time per event over that span."""
    from pipeline import metrics
    from pipeline.batching.scheduler import BatchScheduler
    from pipeline.dashboard.live import LiveState
    from pipeline.ingest.offsets import AckedOffsets
    from pipeline.ingest.reader import EventReader
    from pipeline.model.worker import ModelWorker
    from pipeline.output.sink import ProducerSink
    from pipeline.runtime import load_classifier

    fetched = input_records(settings, docs, events)
    tps = list(fetched)
    offsets: AckedOffsets[TopicPartition] = AckedOffsets()
    worker = ModelWorker(load_classifier(settings, settings.model.encoder))
    producer = AckingProducer(len(tps))
    scheduler = BatchScheduler(
        settings,
        worker,
        None,
        ProducerSink(_App(producer)),  # type: ignore[arg-type]  # the part of faust.App it reads
        observers=(metrics.MetricsObserver(), LiveState()),
        inputs_done=offsets.done,
    )
    reader = EventReader(settings, None, offsets)
    reader.on_assigned(tps)
    run = asyncio.ensure_future(scheduler.run())
    await worker.classify(["warm-up"])  # the model thread started
    at = dict.fromkeys(tps, 0)
    per_fetch = max(FETCH_RECORDS // len(tps), 1)
    thresholds = gc.get_threshold()
    settle_heap()  # as the worker does once its models are loaded (pipeline/gc_tuning.py)
    if callgrind:
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True, check=False)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        while any(at[tp] < len(fetched[tp]) for tp in tps):
            room = scheduler.room()
            if room == 0:
                await scheduler.wait_for_room()
                continue
            take = max(min(room // len(tps), per_fetch), 1)
            fetch = {tp: fetched[tp][at[tp] : at[tp] + take] for tp in tps if at[tp] < len(fetched[tp])}
            for tp, records in fetch.items():
                at[tp] += len(records)
            await reader.hand_in(scheduler, fetch)
            await asyncio.sleep(0)  # the scheduler's turn, as between two fetches
        await scheduler.drain()
        cpu1, wall1 = time.process_time(), time.perf_counter()
    finally:
        if callgrind:
            subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True, check=False)
        run.cancel()
        await worker.aclose()
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    done = offsets.advanced()
    return {
        "events": events,
        "max_batch": settings.batching.max_batch,
        "all_done": all(done.get(tp) == len(fetched[tp]) for tp in tps),
        "producer_batches": producer.batches,
        "cpu_us_per_event": 1e6 * (cpu1 - cpu0) / events,
        "wall_us_per_event": 1e6 * (wall1 - wall0) / events,
    }
