"""End-to-end fixtures: a real broker per engine (started by the test session) and worker processes.

Each test gets its own topics and consumer group (unique names), so tests never see each other's records.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from pipeline.broker import BrokerStatus, EmbeddedBroker
from pipeline.config import Settings, load_settings
from pipeline.kafka_client import ensure_topics
from pipeline.model.catalog import model_dir
from pipeline.worker_process import WorkerProcess

MIB = 1024 * 1024

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / ".cache" / "models"
CONFIG = ROOT / "config" / "slmstream.yaml"
PARTITIONS = 4

pytestmark = pytest.mark.e2e


def worker_settings(**env: str) -> Settings:
    """The settings a worker started by these tests reads: config/slmstream.yaml, then `env` (SLMSTREAM_*
    variables, as passed to `start_worker` / `WorkerPool`) -- the developer's own SLMSTREAM_* variables left
    out. Tests take their limits from here, so a changed default cannot leave a stale copy in a test."""
    return _worker_settings(tuple(sorted(env.items())))


@functools.cache
def _worker_settings(env: tuple[tuple[str, str], ...]) -> Settings:
    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.startswith("SLMSTREAM_")]:
            del os.environ[name]
        os.environ.update({"SLMSTREAM_CONFIG": str(CONFIG), **dict(env)})
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def _models_built() -> None:
    if not (model_dir(MODELS, "minilm-l6-int8") / "manifest.json").exists():
        pytest.fail("models are not built: run `make models` (or `slmstream models build`) first")


@pytest.fixture(scope="session", params=["tansu", "noida"])
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerStatus]:
    state = tmp_path_factory.mktemp(f"broker-{request.param}")
    b = EmbeddedBroker(request.param, port=free_port(), state_dir=state)
    status = b.start()
    yield status
    b.stop()


class Topics:
    def __init__(self) -> None:
        uid = uuid.uuid4().hex[:8]
        self.uid = uid
        self.events, self.enriched = f"ev-{uid}", f"ev-{uid}.enriched"
        self.dlq, self.deferred = f"ev-{uid}.dlq", f"ev-{uid}.deferred"
        # The analytics' outputs and internal hops (used when a test enables them): this test's own, like the rest.
        self.summaries, self.stats, self.alerts = f"ev-{uid}.summaries", f"ev-{uid}.stats", f"ev-{uid}.alerts"
        self.by_key, self.partials = f"ev-{uid}.by-key", f"ev-{uid}.partials"
        self.feedback, self.learning = f"ev-{uid}.feedback", f"ev-{uid}.learning"  # learning from analysts

    @property
    def all(self) -> list[str]:
        return [self.events, self.enriched, self.dlq, self.deferred]

    def env(self) -> dict[str, str]:
        return {
            "SLMSTREAM_APP_ID": f"e2e-{self.uid}",
            "SLMSTREAM_TOPICS__EVENTS": self.events,
            "SLMSTREAM_TOPICS__ENRICHED": self.enriched,
            "SLMSTREAM_TOPICS__DLQ": self.dlq,
            "SLMSTREAM_TOPICS__DEFERRED": self.deferred,
            "SLMSTREAM_TOPICS__SUMMARIES": self.summaries,
            "SLMSTREAM_TOPICS__STATS": self.stats,
            "SLMSTREAM_TOPICS__ALERTS": self.alerts,
            "SLMSTREAM_TOPICS__ENRICHED_BY_KEY": self.by_key,
            "SLMSTREAM_TOPICS__STATS_PARTIALS": self.partials,
            "SLMSTREAM_TOPICS__FEEDBACK": self.feedback,
            "SLMSTREAM_TOPICS__LEARNING": self.learning,
            "SLMSTREAM_TOPICS__PARTITIONS": str(PARTITIONS),
        }


@pytest.fixture
def topics(broker: BrokerStatus) -> Topics:
    t = Topics()
    asyncio.run(ensure_topics(broker.bootstrap, t.all, PARTITIONS))
    return t


@pytest.fixture
def start_worker(broker: BrokerStatus, topics: Topics, tmp_path: Path) -> Iterator:
    """Start a worker process on this test's topics; every worker is stopped at teardown."""
    workers: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        n = len(workers)
        w = WorkerProcess(
            {
                "SLMSTREAM_CONFIG": str(CONFIG),
                "SLMSTREAM_BROKER": broker.url,
                "SLMSTREAM_MODEL__CACHE_DIR": str(MODELS),
                "SLMSTREAM_LOG_FORMAT": "json",
                **topics.env(),
                **env,
            },
            tmp_path / f"worker-{n}.log",
            tmp_path / f"worker-{n}-data",
            free_port(),
        )
        workers.append(w)
        w.start()
        w.wait_ready(90)
        return w

    yield start
    for w in workers:
        w.stop(20)
        w.kill()


async def produce(bootstrap: str, topic: str, values: list[bytes], rate: float = 0.0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        start = time.perf_counter()
        futures = []
        for i, v in enumerate(values):
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            futures.append(await producer.send(topic, v))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def collect(
    bootstrap: str, topics: list[str], until: dict[str, int], timeout: float, grace: float = 2.0
) -> dict[str, list[dict]]:
    """Read the topics from the start until each has at least `until[topic]` records, then `grace` seconds
    more (so extra records, e.g. duplicates, are seen too)."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    got: dict[str, list[dict]] = {t: [] for t in topics}
    try:
        deadline = time.monotonic() + timeout
        done_at: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                got[tp.topic].extend(orjson.loads(r.value) for r in records)
            if done_at is None and all(len(got[t]) >= n for t, n in until.items()):
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at >= grace:
                break
    finally:
        await consumer.stop()
    return got


async def read_raw(bootstrap: str, topic: str, count: int, timeout: float, grace: float = 1.0) -> list[ConsumerRecord]:
    """Every record of `topic` from the start, until `count` are read (and `grace` seconds more) or `timeout`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=16 * MIB,  # a record can be up to the 1 MiB DLQ limit and more in a replay
    )
    await consumer.start()
    got: list[ConsumerRecord] = []
    try:
        deadline, done_at = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got.extend(records)
            if done_at is None and len(got) >= count:
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at >= grace:
                break
    finally:
        await consumer.stop()
    return got
