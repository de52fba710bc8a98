"""Faust's aiokafka transport with one change: the consumer's fetch wait is ours to set.

Faust 0.15 hard-codes `fetch_max_wait_ms=1500`. Apache Kafka answers a waiting fetch as soon as data
arrives, so that only matters when idle; tansu waits the full time before answering (brokers.md), which
would put 1.5 s into every hop. We set it from `Settings.fetch_max_wait_ms` (default 20 ms).
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiokafka
from faust.transport.drivers import aiokafka as driver


class ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Private attribute of aiokafka 0.14 (read when the consumer starts); the version is pinned.
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", 500)
        return consumer


class Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        # Faust 0.15.3 forgets the acked-but-uncommitted offsets of revoked partitions before the app's own
        # revoke-time commit, so every rebalance replayed up to a commit interval of finished events
        # (duplicates without any crash, found by tests/e2e/test_faults.py). Commit them while we still own them.
        try:
            await self.commit()
        except Exception as exc:  # a failed commit only means duplicates, as before
            self.log.warning("commit before revoke failed: %r", exc)
        await super().on_partitions_revoked(revoked)


class Transport(driver.Transport):
    Consumer: ClassVar[type] = Consumer
