"""The open-loop sender, on a fake clock: every send goes out at its scheduled time (or, after a stall, at once
with the others that fell due), carries that scheduled time as `ts`, and never waits for acks."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from bench.events import make_events
from bench.loadgen import send_open_loop

DOCS = [{"text": "charged twice", "key": "cust-1"}, {"text": "where is my parcel"}]
T0 = 1_800_000_000.0  # epoch seconds at the start of a test
RATE = 2000.0  # sends per second: one every 0.5 ms


class FakeClock:
    """Epoch seconds that move only when the sender sleeps; `stalls[k]` s are added to the k-th sleep (a loop
    held up by something else)."""

    def __init__(self, stalls: dict[int, float] | None = None) -> None:
        self.t = T0
        self.stalls = stalls or {}
        self.sleeps = 0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0.0
        self.t += seconds + self.stalls.get(self.sleeps, 0.0)
        self.sleeps += 1
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would


class FakeProducer:
    """Records what was sent and when (by the fake clock); acks resolve only when `release()` is called."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, str, bytes, bytes | None]] = []
        self.acks: list[asyncio.Future[None]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
        self.sent.append((self.clock.now() * 1000.0, topic, value, key))
        fut = asyncio.get_running_loop().create_future()
        self.acks.append(fut)
        return fut

    def release(self) -> None:
        for f in self.acks:
            f.set_result(None)


async def run(n: int, clock: FakeClock, progress: list[int] | None = None):
    producer = FakeProducer(clock)
    events = make_events(DOCS, n, "t")
    on_sent = progress.append if progress is not None else (lambda _n: None)
    task = asyncio.ensure_future(
        send_open_loop(producer, "in", events, RATE, on_sent=on_sent, clock=clock.now, sleep=clock.sleep)  # type: ignore[arg-type]
    )
    while len(producer.sent) < n:
        assert not task.done(), task.exception() if task.done() else None
        await asyncio.sleep(0)
    # Every send went out with no ack resolved: the sender never waited for the broker (open loop).
    assert not any(f.done() for f in producer.acks)
    await asyncio.sleep(0)
    assert not task.done(), "returned before the acks"
    producer.release()
    return producer, await task


def expected_schedule_ms(n: int) -> list[float]:
    """The schedule worked out here, not by the code under test: start 50 ms after the clock, RATE per second."""
    return [(T0 + 0.05 + i / RATE) * 1000.0 for i in range(n)]


async def test_each_send_goes_out_at_its_scheduled_time_and_carries_it() -> None:
    progress: list[int] = []
    producer, report = await run(40, FakeClock(), progress)
    want = expected_schedule_ms(40)
    sent_at = [at for at, _, _, _ in producer.sent]
    # Epoch milliseconds (~1.8e12) in float64 are 2.4e-4 apart: 1e-3 ms is the finest meaningful tolerance.
    assert sent_at == pytest.approx(want, abs=1e-3)
    docs = [orjson.loads(v) for _, _, v, _ in producer.sent]
    assert [d["ts"] for d in docs] == [int(t) for t in want]
    assert [d["id"] for d in docs] == [f"t-{i:06d}" for i in range(40)]
    assert [topic for _, topic, _, _ in producer.sent] == ["in"] * 40
    assert producer.sent[0][3] == b"cust-1" and producer.sent[1][3] is None
    assert report.worst_lag_ms == pytest.approx(0.0, abs=1e-3)
    assert report.start_s * 1000.0 == pytest.approx(want[0], abs=1e-3)
    assert report.end_s * 1000.0 == pytest.approx(want[-1], abs=1e-3)
    assert progress == list(range(1, 41))  # one send per wake-up when nothing is late


async def test_after_a_stall_the_late_sends_go_at_once_and_the_schedule_does_not_move() -> None:
    stall_s = 0.0123  # the 10th sleep ends 12.3 ms late: ~25 sends fall due meanwhile
    producer, report = await run(80, FakeClock(stalls={10: stall_s}))
    want = expected_schedule_ms(80)
    sent_at = [at for at, _, _, _ in producer.sent]
    stall_end = want[10] + stall_s * 1000.0
    burst = [i for i in range(10, 80) if want[i] <= stall_end + 1e-3]
    assert len(burst) == 25  # sends 10..34 were due by the end of the stall
    for i in range(80):
        assert sent_at[i] >= want[i] - 1e-3, f"send {i} went out early"
        if i in burst:
            assert sent_at[i] == pytest.approx(stall_end, abs=1e-3)  # together, as soon as the loop runs again
        else:
            assert sent_at[i] == pytest.approx(want[i], abs=1e-3)  # back on the original schedule
    assert report.worst_lag_ms == pytest.approx(stall_s * 1000.0, abs=1e-3)
    # `ts` stays the scheduled time even for the late ones: latency is measured from the schedule
    assert [orjson.loads(v)["ts"] for _, _, v, _ in producer.sent] == [int(t) for t in want]
