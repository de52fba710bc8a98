"""The sink the scheduler writes to: Faust's producer (aiokafka underneath)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import faust


class FaustSink:
    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes | None]] | None = None
    ) -> Awaitable[Any]:
        # The producer directly, not Topic.send: no codec work, and we get the broker-ack future back.
        return await self.app.producer.send(topic, key, value, None, None, headers)
