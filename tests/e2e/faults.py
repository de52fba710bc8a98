"""Helpers for the fault-injection and overload tests (tests/e2e/test_faults.py, test_overload.py).

* `StreamProducer`: produces uniquely-numbered events at a steady rate from a background thread and
  records when each one was sent (`ts` = send time, so the batcher's deadlines are real).
* `OutputReader`: reads the output topics (enriched, DLQ, deferred) from a background thread for the whole
  test and records every record with its Kafka timestamp (= when the worker produced it) and when we saw
  it, so a test can tell when each event was done, attribute duplicates to a kill and time the drain.
* `WorkerPool`: worker processes on one broker and one set of topics, started without blocking, killed
  (SIGKILL of the process group) or stopped (SIGTERM); all of them are stopped at the end.
* `RssSampler`: samples a process's VmRSS from /proc every 0.5 s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.worker_process import WorkerProcess
from tests.e2e.conftest import CONFIG, MODELS, PARTITIONS, ROOT, Topics, free_port

DATA = ROOT / "pipeline" / "samples"
# Faust's broker_commit_interval as pipeline/faust_app.py sets it (a Faust app option, not a setting of ours).
# Batching limits are not copied here: read them with tests.e2e.conftest.worker_settings(**env).
COMMIT_INTERVAL_S = 1.0


def sample_texts() -> list[str]:
    return [orjson.loads(line)["text"] for line in (DATA / "sample_events.jsonl").read_bytes().splitlines()]


# ---- producing ---------------------------------------------------------------------------------------------
class StreamProducer:
    """Send up to `n` events `{tag}-{i:06d}` at `rate`/s from a background thread (`halt()` stops it
    early); each event's `ts` is its send time (minus `age_s`: events that are late when they are sent)."""

    def __init__(
        self, bootstrap: str, topic: str, tag: str, n: int, rate: float, partitions: int = 4, age_s: float = 0.0
    ) -> None:
        self.bootstrap, self.topic, self.tag, self.n, self.rate = bootstrap, topic, tag, n, rate
        self.partitions, self.age_s = partitions, age_s
        self.sent: dict[str, float] = {}  # id -> wall time it was handed to the producer
        self.where: dict[str, tuple[int, int]] = {}  # id -> (partition, offset) on the input topic
        self.started_at = self.finished_at = 0.0
        self.error: BaseException | None = None
        self._texts = sample_texts()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"produce-{tag}", daemon=True)

    def ids(self) -> list[str]:
        """The ids sent so far (all of them once `join()` returned)."""
        return list(self.sent)

    def event_id(self, i: int) -> str:
        return f"{self.tag}-{i:06d}"

    def start(self) -> StreamProducer:
        self._thread.start()
        return self

    def halt(self) -> None:
        self._halt.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "producer did not finish"
        if self.error is not None:
            raise self.error

    @property
    def achieved_rate(self) -> float:
        return len(self.sent) / max(self.finished_at - self.started_at, 1e-9)

    def _run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    async def _produce(self) -> None:
        # Faust-independent client: acks=all, small linger, no idempotence (tansu lacks InitProducerId).
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            futures: list[tuple[str, asyncio.Future]] = []
            self.started_at = time.time()
            start = time.perf_counter()
            for i in range(self.n):
                if self._halt.is_set():
                    break
                delay = start + i / self.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.time()
                doc = {
                    "id": self.event_id(i),
                    "text": self._texts[i % len(self._texts)],
                    "ts": int((now - self.age_s) * 1000),
                    "source": "faults",
                    "key": f"k-{i % 97}",
                }
                # Round-robin over the partitions: each event's (partition, offset) is known, for diagnostics.
                fut = await producer.send(self.topic, orjson.dumps(doc), partition=i % self.partitions)
                futures.append((doc["id"], fut))
                self.sent[doc["id"]] = now
            for event_id, fut in futures:
                meta = await fut
                self.where[event_id] = (meta.partition, meta.offset)
            self.finished_at = time.time()
        finally:
            await producer.stop()


# ---- reading the outputs -------------------------------------------------------------------------------------
@dataclass(slots=True)
class Out:
    topic: str  # "enriched" | "dlq" | "deferred"
    id: str | None
    ts: float  # Kafka record timestamp (s): when the worker produced it
    seen: float  # when this reader got it (s)
    doc: dict | None  # the enriched record (None for other topics)
    partition: int = -1
    offset: int = -1


@dataclass
class OutputReader:
    """Read enriched, DLQ and deferred records from the beginning, in a background thread."""

    bootstrap: str
    topics: Topics
    records: list[Out] = field(default_factory=list)
    error: BaseException | None = None
    reread: int = 0  # records delivered again at an offset already seen (the client reset its position)
    # Records at an offset this reader had already read that are NOT the record it read there: the broker lost
    # what it had at that offset (e.g. on a restart) and gave the offset to a new record. (topic, partition,
    # offset, (id, ts) read first, (id, ts) now).
    reused: list[tuple[str, int, int, tuple, tuple]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="read-outputs", daemon=True)
        self._names = {
            self.topics.enriched: "enriched",
            self.topics.dlq: "dlq",
            self.topics.deferred: "deferred",
        }

    def __enter__(self) -> OutputReader:
        self._thread.start()
        self._started.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as exc:
            self.error = exc
            self._started.set()

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(
            *self._names,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            # A broker restart in the middle: keep retrying rather than give up.
            request_timeout_ms=10000,
            retry_backoff_ms=200,
        )
        await consumer.start()
        self._started.set()
        seen: dict[tuple[str, int, int], tuple[str | None, int]] = {}  # where -> (id, Kafka timestamp)
        try:
            while not self._stop.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=100)
                except Exception:  # broker briefly away (restart test): the client reconnects
                    await asyncio.sleep(0.5)
                    continue
                now = time.time()
                outs = []
                for tp, recs in batch.items():
                    kind = self._names[tp.topic]
                    for r in recs:
                        where = (tp.topic, tp.partition, r.offset)
                        rid, doc = _id_of(kind, r.value)
                        before = seen.get(where)
                        if before == (rid, r.timestamp):
                            self.reread += 1  # the same record again, not a new one: not a duplicate
                            continue
                        if before is not None:  # another record at an offset read before: the broker reused it
                            self.reused.append((kind, tp.partition, r.offset, before, (rid, r.timestamp)))
                        seen[where] = (rid, r.timestamp)
                        outs.append(Out(kind, rid, r.timestamp / 1000.0, now, doc, tp.partition, r.offset))
                if outs:
                    with self._lock:
                        self.records.extend(outs)
        finally:
            await consumer.stop()

    # ---- queries ----
    def snapshot(self) -> list[Out]:
        if self.error is not None:
            raise self.error
        with self._lock:
            return list(self.records)

    def done_ids(self) -> set[str]:
        """Ids with a final outcome: an enriched or a DLQ record."""
        return {r.id for r in self.snapshot() if r.topic in ("enriched", "dlq") and r.id is not None}

    def wait_done(self, ids: Iterable[str], timeout: float, grace: float = 2.0) -> float | None:
        """Wait until every id has an enriched/DLQ record, then `grace` s more (to catch late duplicates).
        Returns when the last one was seen (wall time), or None on timeout."""
        want = set(ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if want <= self.done_ids():
                last = max(r.seen for r in self.snapshot() if r.id in want and r.topic in ("enriched", "dlq"))
                time.sleep(grace)
                return last
            time.sleep(0.2)
        return None

    def final_counts(self) -> Counter[str]:
        """How many final records (enriched + DLQ) each id has."""
        return Counter(r.id for r in self.snapshot() if r.topic in ("enriched", "dlq") and r.id is not None)

    def by_id(self) -> dict[str, list[Out]]:
        out: dict[str, list[Out]] = defaultdict(list)
        for r in self.snapshot():
            if r.id is not None:
                out[r.id].append(r)
        return out


def _id_of(kind: str, value: bytes) -> tuple[str | None, dict | None]:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, None
    if kind == "enriched":
        return doc.get("id"), doc
    if kind == "deferred":  # the original event bytes
        return (doc.get("id") if isinstance(doc, dict) else None), None
    with contextlib.suppress(Exception):  # dlq: the original bytes inside
        original = orjson.loads(base64.b64decode(doc["original"]["value_b64"]))
        return original.get("id"), None
    return None, None


# ---- workers ---------------------------------------------------------------------------------------------------
class WorkerPool:
    """Worker processes on one broker and one set of topics (same app id: one consumer group)."""

    def __init__(self, broker_url: str, topics: Topics, tmp_path: Path, **env: str) -> None:
        self.broker_url, self.topics, self.tmp_path, self.env = broker_url, topics, tmp_path, env
        self.workers: list[WorkerProcess] = []

    def spawn(self, **env: str) -> WorkerProcess:
        """Start a worker process; does not wait for it to be ready."""
        n = len(self.workers)
        w = WorkerProcess(
            {
                "SLMSTREAM_CONFIG": str(CONFIG),
                "SLMSTREAM_BROKER": self.broker_url,
                "SLMSTREAM_MODEL__CACHE_DIR": str(MODELS),
                "SLMSTREAM_LOG_FORMAT": "json",
                **self.topics.env(),
                **self.env,
                **env,
            },
            self.tmp_path / f"worker-{n}.log",
            self.tmp_path / f"worker-{n}-data",
            free_port(),
        )
        self.workers.append(w)
        w.start()
        return w

    def start(self, timeout: float = 90.0, **env: str) -> WorkerProcess:
        w = self.spawn(**env)
        w.wait_ready(timeout)
        return w

    def close(self) -> None:
        for w in self.workers:
            w.stop(20)
            w.kill()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {w.log_file.name}\n{w.log_tail(lines)}" for w in self.workers)


def log_events(w: WorkerProcess) -> list[dict]:
    """The worker's JSON log lines (structlog events) as dicts; other lines are skipped."""
    out = []
    with contextlib.suppress(OSError):
        for line in w.log_file.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.append(orjson.loads(line))
    return out


def assignment(w: WorkerProcess, topic: str) -> set[int] | None:
    """Partitions of `topic` in the worker's latest `partitions_assigned` log line of the classify reader
    (pipeline/ingest/reader.py; None: no assignment logged yet)."""
    latest = None
    for e in log_events(w):
        if e.get("event") == "partitions_assigned":
            latest = e
    if latest is None:
        return None
    return set(latest.get("assigned", {}).get(topic, ()))


def wait_assigned(workers: list[WorkerProcess], topic: str, partitions: int, timeout: float) -> float:
    """Wait until the live `workers` together own every partition of `topic`, each one at least one
    (a settled group). Returns how long it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for w in workers:
            if w.proc is not None and w.proc.poll() is not None:
                raise AssertionError(f"worker exited with {w.proc.returncode}:\n{w.log_tail()}")
        parts = [assignment(w, topic) for w in workers]
        if all(parts) and set().union(*parts) == set(range(partitions)) and sum(map(len, parts)) == partitions:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(
        f"group did not settle in {timeout:.0f}s: {[assignment(w, topic) for w in workers]}\n"
        + "\n".join(w.log_tail(15) for w in workers)
    )


def metric(w: WorkerProcess, name: str) -> list[tuple[str, float]]:
    """(labels, value) of each sample of a Prometheus metric on the worker's /metrics page."""
    out = []
    for line in w.metrics().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            out.append((head[len(name) :], float(value)))
    return out


# ---- memory ----------------------------------------------------------------------------------------------------
def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class RssSampler:
    """Sample VmRSS of a pid every `interval` s in a background thread."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            v = rss_mib(self.pid)
            if v is not None:
                self.samples.append((time.time(), v))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def max(self) -> float:
        return max((v for _, v in self.samples), default=0.0)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100.0 * (len(s) - 1))))
    return s[k]


# ---- diagnostics ---------------------------------------------------------------------------------------------
_LOG_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] \[\d+\] \[\w+\] (.*)$")
_MILESTONES = (
    "Signal received",
    "Revoking previously assigned partitions",
    "Setting newly assigned partitions",
    "Wait for streams",
    "Flush producer buffer",
    "LeaveGroup",
    "Discarded commit",
    "OffsetCommit failed",
    "Heartbeat failed",
)


def timeline(pool: WorkerPool, t0: float) -> list[tuple[float, str]]:
    """Group and shutdown milestones from every worker's log, as (seconds after t0, 'worker-N: line')."""
    out = []
    for n, w in enumerate(pool.workers):
        with contextlib.suppress(OSError):
            for line in w.log_file.read_text(errors="replace").splitlines():
                m = _LOG_TS.match(line)
                if m and any(k in m.group(3) for k in _MILESTONES):
                    t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
                    out.append((t - t0, f"worker-{n}: {m.group(3).strip()[:90]}"))
    return sorted(out)


def explain_duplicates(
    reader: OutputReader, producer: StreamProducer, pool: WorkerPool, dup_ids: list[str], limit: int = 10
) -> str:
    """For each given id (duplicated or lost): input partition/offset, send time and every output record's time (s after
    the stream started), then the workers' group/shutdown timeline: evidence for a report."""
    t0 = producer.started_at
    by_id = reader.by_id()
    events = timeline(pool, t0)
    revokes = [
        (t, what.split(":")[0])
        for t, what in events
        if "Revoking previously assigned partitions" in what and "set()" not in what
    ]
    lines = []
    for i in dup_ids[:limit]:
        where = producer.where.get(i)
        outs = sorted(by_id[i], key=lambda o: o.ts)
        first = min((o.ts - t0 for o in outs if o.topic in ("enriched", "dlq")), default=None)
        nxt = next(((t, who) for t, who in revokes if first is not None and t >= first), None)
        rel = f"; first copy {1000 * (nxt[0] - first):.0f} ms before {nxt[1]} revoked" if nxt else ""
        outs_s = ", ".join(f"{o.topic} p{o.partition}@{o.offset} at {o.ts - t0:.3f}" for o in outs) or "none"
        lines.append(f"  {i}: input p{where[0]}@{where[1]} sent {producer.sent[i] - t0:.3f}s; outputs {outs_s}{rel}")
    if len(dup_ids) > limit:
        lines.append(f"  ... and {len(dup_ids) - limit} more")
    lines.append("  worker timeline (s after the stream started):")
    lines += [f"    {t:8.3f} {what}" for t, what in events]
    return "\n".join(lines)


def revoke_leads(reader: OutputReader, producer: StreamProducer, pool: WorkerPool, dup_ids: list[str]) -> list[float]:
    """For each duplicated id: ms from its first enriched/DLQ copy to the next partition revoke in any worker
    (None-free: ids with no later revoke are left out)."""
    t0 = producer.started_at
    revokes = sorted(
        t for t, what in timeline(pool, t0) if "Revoking previously assigned partitions" in what and "set()" not in what
    )
    by_id = reader.by_id()
    out = []
    for i in dup_ids:
        first = min((o.ts - t0 for o in by_id[i] if o.topic in ("enriched", "dlq")), default=None)
        nxt = next((t for t in revokes if first is not None and t >= first), None)
        if nxt is not None:
            out.append(1000 * (nxt - first))
    return out


def group_offsets(bootstrap: str, group: str) -> dict[str, int]:
    """The group's committed offsets, as {'topic/partition': offset} (diagnostics)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def get() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            got = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return {f"{tp.topic}/{tp.partition}": v.offset for tp, v in sorted(got.items())}

    return asyncio.run(get())


def recheck_lost(bootstrap: str, topics: Topics, lost: list[str], pool: WorkerPool) -> str:
    """A second opinion on ids the live reader did not see: read all output topics again from the start
    with a fresh consumer, and ask the live workers for their consumer lag and queue depth."""
    from tests.e2e.conftest import collect

    names = [topics.enriched, topics.dlq, topics.deferred]
    got = asyncio.run(collect(bootstrap, names, {}, timeout=15, grace=5))
    want = set(lost)
    found = {t: sorted({d.get("id") for d in docs if isinstance(d, dict)} & want) for t, docs in got.items()}
    lines = [f"  fresh re-read of the outputs: {', '.join(f'{t}: {len(v)} of them' for t, v in found.items())}"]
    for n, w in enumerate(pool.workers):
        if w.proc is not None and w.proc.poll() is None:
            with contextlib.suppress(Exception):
                lag = [(lbl, v) for lbl, v in metric(w, "slmstream_consumer_lag") if v]
                depth = metric(w, "slmstream_queue_depth")
                lines.append(f"  worker-{n}: queue depth {depth}, non-zero lag {lag}")
    return "\n".join(lines)


def read_outputs(bootstrap: str, topics: Topics, timeout: float = 30.0) -> list[Out]:
    """Every record on the output topics now, read from the start to the end offsets with a fresh consumer
    (the broker's log as it is, with partitions and offsets)."""
    from aiokafka import TopicPartition

    names = {topics.enriched: "enriched", topics.dlq: "dlq", topics.deferred: "deferred"}

    async def read() -> list[Out]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in names for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            out: list[Out] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if all([await consumer.position(tp) >= end[tp] for tp in tps]):
                    break
                for tp, recs in (await consumer.getmany(timeout_ms=200)).items():
                    kind = names[tp.topic]
                    for r in recs:
                        rid, doc = _id_of(kind, r.value)
                        out.append(Out(kind, rid, r.timestamp / 1000.0, time.time(), doc, tp.partition, r.offset))
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


def vanished(seen: list[Out], now: list[Out]) -> list[Out]:
    """Records the live reader read that the broker's log no longer holds at their offset: records the broker
    had acknowledged and served, then lost (noida-db on a restart, see test_noida_keeps_acknowledged_records)."""
    at = {(o.topic, o.partition, o.offset): (o.id, o.ts) for o in now}
    return [o for o in seen if at.get((o.topic, o.partition, o.offset)) != (o.id, o.ts)]


def log_diff(seen: list[Out], now: list[Out], t_ref: float) -> str:
    """`vanished` records per topic, with their Kafka timestamps relative to `t_ref`."""
    gone_records = vanished(seen, now)
    if not gone_records:
        return "  every record the live reader read is still in the broker's log at its offset"
    still = {o.id for o in now if o.topic in ("enriched", "dlq")}
    lines = [f"  {len(gone_records)} records the live reader read are gone from the broker's log at their offset:"]
    for topic in ("enriched", "dlq", "deferred"):
        vs = [o for o in gone_records if o.topic == topic]
        if vs:
            where = ", ".join(f"p{o.partition}@{o.offset}" for o in vs[:8])
            gone = sum(o.id not in still for o in vs)
            written = f"{min(o.ts for o in vs) - t_ref:+.2f}s..{max(o.ts for o in vs) - t_ref:+.2f}s"
            read = f"{min(o.seen for o in vs) - t_ref:+.2f}s..{max(o.seen for o in vs) - t_ref:+.2f}s"
            lines.append(
                f"    {topic}: {len(vs)} (e.g. {where}), written {written} from the broker stop, read {read}; "
                f"{gone} of their ids have no final record now"
            )
    return "\n".join(lines)


def explain_lost(
    lost: list[str],
    now: list[Out],
    where: dict[str, tuple[int, int]],
    committed: dict[str, int],
    topics: Topics,
    t_ref: float,
) -> str:
    """For each lost id (no enriched/DLQ record in the broker's log now): where its input is, its deferred
    records, and whether the group's committed offsets are past them (then nothing will read it again)."""
    by_id: dict[str, list[Out]] = defaultdict(list)
    for o in now:
        if o.id is not None:
            by_id[o.id].append(o)
    lines = []
    for i in lost[:12]:
        p, off = where.get(i, (-1, -1))
        c_in = committed.get(f"{topics.events}/{p}", -1)
        parts = [f"  {i}: input p{p}@{off} (committed {c_in}: {'past it' if c_in > off else 'not past it'})"]
        for o in sorted(by_id[i], key=lambda o: o.ts):
            c = committed.get(f"{topics.deferred}/{o.partition}", -1) if o.topic == "deferred" else None
            note = "" if c is None else f" (committed {c}: {'past it' if c > o.offset else 'not past it'})"
            parts.append(f"{o.topic} p{o.partition}@{o.offset} written {o.ts - t_ref:+.2f}s{note}")
        lines.append("; ".join(parts))
    if len(lost) > 12:
        lines.append(f"  ... and {len(lost) - 12} more")
    return "\n".join(lines)
