"""The open-loop sender: every message carries its scheduled send time, sends never wait for acks."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from bench.events import make_events
from bench.loadgen import send_open_loop

DOCS = [{"text": "charged twice", "key": "cust-1"}, {"text": "where is my parcel"}]


class FakeProducer:
    """Records what was sent; acks resolve only when `release()` is called."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.acks: list[asyncio.Future[None]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
        self.sent.append((topic, value, key))
        fut = asyncio.get_running_loop().create_future()
        self.acks.append(fut)
        return fut

    def release(self) -> None:
        for f in self.acks:
            if not f.done():
                f.set_result(None)


async def test_sends_on_schedule_with_scheduled_ts_and_never_waits_for_acks() -> None:
    producer = FakeProducer()
    events = make_events(DOCS, 40, "t")
    progress: list[int] = []

    async def release_after_sends() -> None:
        while len(producer.sent) < len(events):  # acks come only after the last send: open loop
            await asyncio.sleep(0.001)
        producer.release()

    releaser = asyncio.ensure_future(release_after_sends())
    report = await send_open_loop(producer, "in", events, 2000.0, on_sent=progress.append)  # type: ignore[arg-type]
    await releaser
    assert [t for t, _, _ in producer.sent] == ["in"] * 40
    docs = [orjson.loads(v) for _, v, _ in producer.sent]
    assert [d["id"] for d in docs] == [f"t-{i:06d}" for i in range(40)]
    # ts = the scheduled send time: 0.5 ms apart at 2000/s, from the reported start
    assert [d["ts"] for d in docs] == [int(t) for t in report.scheduled_ms]
    # Epoch milliseconds (~1.8e12) in float64 are spaced 2.4e-4 apart: the difference of two is exact to that.
    assert report.scheduled_ms[1] - report.scheduled_ms[0] == pytest.approx(0.5, abs=1e-3)
    assert report.scheduled_ms[0] == pytest.approx(report.start_s * 1000.0)
    assert producer.sent[0][2] == b"cust-1" and producer.sent[1][2] is None
    assert progress == sorted(progress) and progress[-1] == 40
    assert report.end_s >= report.start_s and report.worst_lag_ms >= 0.0
