"""One model server process, two Faust workers sharing it, a real broker: every event is classified once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bench.model_server import ModelServerProcess
from pipeline.model.catalog import read_manifest
from tests.e2e.conftest import CONFIG, MODELS, PARTITIONS, ROOT, collect, produce
from tests.e2e.faults import OutputReader, StreamProducer, WorkerPool, wait_assigned
from tests.e2e.test_classify_e2e import sample_events

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)  # the transport under test is the socket, not Kafka
def test_two_workers_share_one_model_server(broker, topics, start_worker, tmp_path: Path, socket_dir: Path) -> None:
    sock = socket_dir / "model.sock"
    server = ModelServerProcess(
        sock,
        tmp_path / "model-server.log",
        {
            "SLMSTREAM_CONFIG": str(ROOT / "config" / "slmstream.yaml"),
            "SLMSTREAM_MODEL__CACHE_DIR": str(MODELS),
            "SLMSTREAM_LOG_FORMAT": "json",
        },
    )
    server.start()
    try:
        server.wait_ready(90)
        workers = [start_worker(SLMSTREAM_MODEL__SERVER_SOCKET=str(sock)) for _ in range(2)]
        valid = sample_events(200, topics.uid)
        asyncio.run(produce(broker.bootstrap, topics.events, valid, rate=150))
        got = asyncio.run(collect(broker.bootstrap, [topics.enriched], {topics.enriched: len(valid)}, 120))
        enriched = got[topics.enriched]

        ids = Counter(d["id"] for d in enriched)
        assert set(ids) == {orjson.loads(v)["id"] for v in valid}
        assert sum(ids.values()) == len(valid), "duplicates without a crash"
        served_hash = "sha256:" + read_manifest(MODELS, "minilm-l6-int8")["sha256"][:16]
        assert {(d["analysis"]["model"]["name"], d["analysis"]["model"]["hash"]) for d in enriched} == {
            ("minilm-l6-int8", served_hash)
        }
        correct = sum(d["analysis"]["label"] == d["attrs"]["expected_label"] for d in enriched)
        assert correct >= 0.6 * len(enriched), f"only {correct}/{len(enriched)} classified as expected"

        # both workers classified through the server, neither loaded a model of its own
        for w in workers:
            log = w.log_file.read_text(errors="replace")
            assert "model_server_connected" in log and '"event": "model_loaded"' not in log, w.log_tail()
        server_log = [orjson.loads(line) for line in server.log_file.read_bytes().splitlines() if line.startswith(b"{")]
        batches = [e for e in server_log if e.get("event") == "model_server_batch"]
        assert sum(1 for e in server_log if e.get("event") == "model_loaded") == 1
        assert sum(e["size"] for e in batches) >= len(valid)  # plus the workers' taxonomies and warm-up
    finally:
        assert server.stop() == 0, server.log_tail()
    assert not sock.exists()  # removed at a clean stop


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_workers_ride_out_a_model_server_restart(
    broker, topics, start_worker, tmp_path: Path, socket_dir: Path
) -> None:
    """Stop the server while events flow and start it again: every event is classified, none dead-lettered."""
    sock = socket_dir / "model.sock"
    env = {
        "SLMSTREAM_CONFIG": str(ROOT / "config" / "slmstream.yaml"),
        "SLMSTREAM_MODEL__CACHE_DIR": str(MODELS),
        "SLMSTREAM_LOG_FORMAT": "json",
    }
    servers = [ModelServerProcess(sock, tmp_path / f"model-server-{i}.log", env) for i in range(2)]
    servers[0].start()
    try:
        servers[0].wait_ready(90)
        worker = start_worker(SLMSTREAM_MODEL__SERVER_SOCKET=str(sock))
        valid = sample_events(200, topics.uid)

        async def produce_and_restart() -> None:
            sending = asyncio.ensure_future(produce(broker.bootstrap, topics.events, valid, rate=100))
            await asyncio.sleep(0.8)
            assert await asyncio.to_thread(servers[0].stop, 20) == 0
            servers[1].start()
            await asyncio.to_thread(servers[1].wait_ready, 90)
            await sending

        asyncio.run(produce_and_restart())
        got = asyncio.run(collect(broker.bootstrap, [topics.enriched, topics.dlq], {topics.enriched: len(valid)}, 120))
        ids = {d["id"] for d in got[topics.enriched]}
        assert ids == {orjson.loads(v)["id"] for v in valid}
        assert got[topics.dlq] == []
        second = servers[1].log_file.read_text(errors="replace")
        assert "model_server_batch" in second  # the worker reconnected and went on through the new server
        assert "model_server_reconnected" in worker.log_file.read_text(errors="replace")
    finally:
        for s in servers:
            s.stop()


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)
def test_worker_killed_mid_batch_the_server_and_the_other_worker_go_on(
    broker, topics, tmp_path: Path, socket_dir: Path
) -> None:
    """Two workers share the model server; while events flow fast enough to keep the server busy with both
    workers' requests, SIGKILL one worker (its request queued, being computed or on its way). The server stays up and
    keeps answering the other worker, which goes on, takes over the dead worker's partitions once its session
    expires, and enriches every event (duplicates allowed after a kill; no model errors, no DLQ)."""
    sock = socket_dir / "model.sock"
    server = ModelServerProcess(
        sock,
        tmp_path / "model-server.log",
        {"SLMSTREAM_CONFIG": str(CONFIG), "SLMSTREAM_MODEL__CACHE_DIR": str(MODELS), "SLMSTREAM_LOG_FORMAT": "json"},
    )
    server.start()
    try:
        server.wait_ready(90)
        env = {"SLMSTREAM_MODEL__SERVER_SOCKET": str(sock)}
        with WorkerPool(broker.url, topics, tmp_path, **env) as pool, OutputReader(broker.bootstrap, topics) as reader:
            victim, survivor = pool.spawn(), pool.spawn()
            for w in (victim, survivor):
                w.wait_ready(90)
            wait_assigned([victim, survivor], topics.events, PARTITIONS, 60)
            producer = StreamProducer(broker.bootstrap, topics.events, topics.uid, n=10**7, rate=300).start()

            # The server is busy with both workers: kill one the moment the server has just answered a batch while
            # another request waited (`queued`), or one that merged both workers' requests. Each worker keeps one
            # request at the server: with the model saturated the two alternate (one computed, the other queued),
            # so the victim's request is being computed, queued, or on its way. A merge needs both requests queued
            # at once, which a slow model makes rare with two workers (merging starts at three).
            deadline = time.monotonic() + 60
            before = len(server_batches(server))
            while True:
                batches = server_batches(server)
                if any(b.get("clients", 0) >= 2 or b.get("queued", 0) >= 1 for b in batches[before:]):
                    break
                before = len(batches)
                assert time.monotonic() < deadline, f"server never busy with both workers in 60 s:\n{server.log_tail()}"
                time.sleep(0.01)
            before = len(batches)
            victim.kill()  # SIGKILL of its process group, with requests at the server
            t_kill = time.time()

            # The server goes on answering the survivor.
            deadline = time.monotonic() + 30
            while len(server_batches(server)) < before + 20:
                server.check_alive()
                assert time.monotonic() < deadline, f"the server stopped answering:\n{server.log_tail()}"
                time.sleep(0.1)
            time.sleep(1.0)  # the stream goes on a moment after the kill
            producer.halt()
            producer.join(30)
            ids = producer.ids()

            last = reader.wait_done(ids, timeout=120)
            server.check_alive()
            assert survivor.proc is not None and survivor.proc.poll() is None, survivor.log_tail()
            missing = set(ids) - reader.done_ids()
            assert last is not None and not missing, f"{len(missing)}/{len(ids)} events never enriched"
            assert not any(r.topic == "dlq" for r in reader.snapshot()), "model errors after the kill"
            after_kill = [r for r in reader.snapshot() if r.topic == "enriched" and r.ts > t_kill]
            assert after_kill, "nothing enriched after the kill"
        server_log = server.log_file.read_text(errors="replace")
        assert "model_server_call_failed" not in server_log and "merged_call_failed" not in server_log, server_log
        print(
            f"\n[{broker.engine}] worker killed mid-batch: {len(ids)} events, {before} server batches before the "
            f"kill, {len(server_batches(server)) - before} after; all enriched {last - t_kill:.1f}s after the kill"
        )
    finally:
        assert server.stop() == 0, server.log_tail()


def server_batches(server: ModelServerProcess) -> list[dict]:
    """The server's `model_server_batch` log lines so far."""
    out = []
    with contextlib.suppress(OSError):
        for line in server.log_file.read_bytes().splitlines():
            if line.startswith(b"{") and b"model_server_batch" in line:
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.append(orjson.loads(line))
    return out
