"""pipeline/output/outbox.py with a fake sink whose broker acks the test resolves, and a fake sleep.

Every wait is bounded (`WAIT_S`), so a bug fails the test instead of hanging it; time never passes for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.output.outbox import RESEND_PAUSE_S, SEND_RETRY_FIRST_S, Outbox, Outgoing

WAIT_S = 2.0


class Unreachable(Exception):
    """What aiokafka raises while no broker answers: retriable."""

    retriable = True


class TooLarge(Exception):
    """A record the broker will never take."""

    retriable = False


@dataclass
class Sent:
    record: Outgoing
    ack: asyncio.Future[None]


class FakeSink:
    """Each send hands back a future the test resolves (the broker's ack); `fail` lists errors to raise first."""

    def __init__(self, *fail: Exception) -> None:
        self.fail = list(fail)
        self.attempts = 0
        self.sent: list[Sent] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Any = None) -> asyncio.Future[None]:
        self.attempts += 1
        if self.fail:
            raise self.fail.pop(0)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append(Sent(Outgoing(topic, key, value, headers), fut))
        return fut

    def store(self, *indexes: int) -> None:
        for i in indexes or range(len(self.sent)):
            if not self.sent[i].ack.done():
                self.sent[i].ack.set_result(None)


class FakeSleep:
    """Records each pause and returns at once."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def records(n: int, topic: str = "out") -> list[Outgoing]:
    return [Outgoing(topic, f"k{i}".encode(), f"v{i}".encode()) for i in range(n)]


def acker(log: list[str], name: str) -> Callable[[], None]:
    return lambda: log.append(name)


async def until(cond: Callable[[], bool]) -> None:
    """Yield to the loop until `cond` holds (no time passes; bounded by WAIT_S)."""

    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), WAIT_S)


async def yield_a_while() -> None:
    """Give the outbox plenty of chances to (wrongly) act."""
    for _ in range(50):
        await asyncio.sleep(0)


# ---- ack after the broker, in order ---------------------------------------------------------------------
async def test_inputs_are_acked_only_after_the_broker_has_the_record() -> None:
    sink, log = FakeSink(), []
    outbox = Outbox(sink, sleep=FakeSleep())
    done = await outbox.send_batch(records(1), [acker(log, "a0")], then=acker(log, "then"))
    assert [s.record.value for s in sink.sent] == [b"v0"]  # handed over before send_batch returns
    await yield_a_while()
    assert log == [] and not done.done() and outbox.in_flight == 1
    sink.store()
    await asyncio.wait_for(done, WAIT_S)
    assert log == ["a0", "then"] and outbox.in_flight == 0


async def test_acks_run_in_order_each_after_its_record_and_every_earlier_one() -> None:
    sink, log = FakeSink(), []
    outbox = Outbox(sink, sleep=FakeSleep())
    done = await outbox.send_batch(records(3), [acker(log, f"a{i}") for i in range(3)], then=acker(log, "then"))
    sink.store(2)
    await yield_a_while()
    assert log == []  # record 0 is not stored yet
    sink.store(0)
    await until(lambda: log == ["a0"])
    await yield_a_while()
    assert log == ["a0"]  # a2 waits for record 1
    sink.store(1)
    await asyncio.wait_for(done, WAIT_S)
    assert log == ["a0", "a1", "a2", "then"]


async def test_one_record_may_carry_the_ack_of_many_inputs_and_async_acks_are_awaited() -> None:
    sink, log = FakeSink(), []
    outbox = Outbox(sink, sleep=FakeSleep())

    async def ack_window() -> None:
        for name in ("e1", "e2", "e3"):
            await asyncio.sleep(0)
            log.append(name)

    done = await outbox.send_batch(records(1), [ack_window], then=acker(log, "then"))
    sink.store()
    await asyncio.wait_for(done, WAIT_S)
    assert log == ["e1", "e2", "e3", "then"]


async def test_more_acks_than_records_is_refused() -> None:
    with pytest.raises(ValueError, match="then_ack"):
        await Outbox(FakeSink()).send_batch(records(1), [lambda: None, lambda: None])


async def test_batches_complete_independently_unless_ordered() -> None:
    for ordered, expected in ((False, ["b", "a"]), (True, ["a", "b"])):
        sink, log = FakeSink(), []
        outbox = Outbox(sink, ordered=ordered, sleep=FakeSleep())
        first = await outbox.send_batch(records(1), [acker(log, "a")])
        second = await outbox.send_batch(records(1), [acker(log, "b")])
        sink.store(1)
        await yield_a_while()
        assert log == (["b"] if not ordered else []), ordered
        sink.store(0)
        await asyncio.wait_for(asyncio.gather(first, second), WAIT_S)
        assert log == expected, ordered


# ---- retries ----------------------------------------------------------------------------------------------
async def test_a_retriable_hand_off_error_is_retried_with_a_bounded_backoff() -> None:
    sink, sleep, log = FakeSink(*(Unreachable("no broker") for _ in range(8))), FakeSleep(), []
    outbox = Outbox(sink, retry_max_s=1.0, sleep=sleep)
    done = await outbox.send_batch(records(1), [acker(log, "a0")])
    assert sink.attempts == 9 and len(sink.sent) == 1  # the ninth attempt got through; nothing sent twice
    assert sleep.pauses == [SEND_RETRY_FIRST_S, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert log == []
    sink.store()
    await asyncio.wait_for(done, WAIT_S)
    assert log == ["a0"]


async def test_a_record_the_broker_refuses_is_handed_off_again_before_any_ack() -> None:
    sink, sleep, log = FakeSink(), FakeSleep(), []
    outbox = Outbox(sink, sleep=sleep)
    done = await outbox.send_batch(records(2), [acker(log, "a0"), acker(log, "a1")])
    sink.sent[0].ack.set_exception(Unreachable("NOT_LEADER_FOR_PARTITION"))
    await until(lambda: len(sink.sent) == 3)
    assert sink.sent[2].record == sink.sent[0].record and sleep.pauses == [RESEND_PAUSE_S]
    sink.store(1)
    await yield_a_while()
    assert log == []
    sink.store(2)
    await asyncio.wait_for(done, WAIT_S)
    assert log == ["a0", "a1"] and outbox.failure is None


# ---- not retriable: fatal, loud, nothing acked -----------------------------------------------------------
async def test_a_hand_off_that_can_never_succeed_is_raised_and_stops_the_outbox() -> None:
    failures: list[BaseException] = []
    wrapped = RuntimeError("producer said no")
    wrapped.__cause__ = TooLarge("record too large")  # Faust may wrap the client's error
    for error in (TooLarge("record too large"), wrapped):
        sink, log = FakeSink(error), []
        outbox = Outbox(sink, on_failure=failures.append, sleep=FakeSleep())
        with pytest.raises(type(error)):
            await outbox.send_batch(records(1), [acker(log, "a0")])
        assert sink.attempts == 1 and log == [] and failures[-1] is error
        with pytest.raises(type(error)):  # and every later send_batch, and drain
            await outbox.send_batch(records(1))
        with pytest.raises(type(error)):
            await outbox.drain()
        assert sink.attempts == 1


async def test_a_broker_refusal_that_can_never_succeed_leaves_the_inputs_unacked_and_is_raised() -> None:
    sink, log, failures = FakeSink(), [], []
    outbox = Outbox(sink, on_failure=failures.append, sleep=FakeSleep())
    done = await outbox.send_batch(records(2), [acker(log, "a0"), acker(log, "a1")], then=acker(log, "then"))
    sink.store(0)
    await until(lambda: log == ["a0"])
    refusal = TooLarge("MESSAGE_TOO_LARGE")
    sink.sent[1].ack.set_exception(refusal)
    with pytest.raises(TooLarge):
        await asyncio.wait_for(done, WAIT_S)
    assert log == ["a0"] and len(sink.sent) == 2  # not resent, a1 never acked: a restart replays it
    assert failures == [refusal] and outbox.failure is refusal
    with pytest.raises(TooLarge):
        await outbox.send_batch(records(1))
    with pytest.raises(TooLarge):
        await outbox.drain()


async def test_an_ack_that_raises_is_fatal_too() -> None:
    sink = FakeSink()
    outbox = Outbox(sink, sleep=FakeSleep())

    def broken_ack() -> None:
        raise KeyError("partition revoked")

    done = await outbox.send_batch(records(1), [broken_ack])
    sink.store()
    with pytest.raises(KeyError):
        await asyncio.wait_for(done, WAIT_S)
    with pytest.raises(KeyError):
        await outbox.drain()


# ---- drain --------------------------------------------------------------------------------------------------
async def test_drain_waits_for_every_batch_in_flight_including_those_handed_in_meanwhile() -> None:
    sink, log = FakeSink(), []
    outbox = Outbox(sink, sleep=FakeSleep())
    await outbox.send_batch(records(2), [acker(log, "a0"), acker(log, "a1")])
    drain = asyncio.ensure_future(outbox.drain())
    await yield_a_while()
    assert not drain.done()
    await outbox.send_batch(records(1), [acker(log, "b0")])  # arrives while draining
    sink.store(0, 1)
    await until(lambda: log == ["a0", "a1"])
    await yield_a_while()
    assert not drain.done()  # b0's record is not stored yet
    sink.store(2)
    await asyncio.wait_for(drain, WAIT_S)
    assert log == ["a0", "a1", "b0"] and outbox.in_flight == 0


async def test_drain_with_nothing_in_flight_returns_at_once() -> None:
    await asyncio.wait_for(Outbox(FakeSink()).drain(), WAIT_S)


async def test_deliver_waits_for_the_whole_batch() -> None:
    sink, log = FakeSink(), []
    outbox = Outbox(sink, sleep=FakeSleep())
    deliver = asyncio.ensure_future(outbox.deliver(records(1), [acker(log, "a0")], then=acker(log, "then")))
    await until(lambda: len(sink.sent) == 1)
    await yield_a_while()
    assert not deliver.done()
    sink.store()
    await asyncio.wait_for(deliver, WAIT_S)
    assert log == ["a0", "then"]
