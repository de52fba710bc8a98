"""The recent events of this worker, event id → text: how feedback by id (`{"id": ..., "label": ...}`) finds the
text to learn from.

An observer of the classify path (pipeline/output/observers.py): filled once per delivered batch with the events
whose enriched records the broker holds, so an id an analyst can see in `events.enriched` is here. Bounded: the
`capacity` most recently delivered events (oldest first out); a replayed event moves to the newest end. Runs on
the event loop only: no locks. An event this worker did not classify is in another worker's cache (feedback by
id is resolved across workers through the learning store, pipeline/learning/service.py).
"""

from __future__ import annotations

from collections import OrderedDict

from pipeline.output.observers import BaseObserver, Delivered


class RecentEvents(BaseObserver):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._texts: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._texts)

    def get(self, event_id: str) -> str | None:
        return self._texts.get(event_id)

    def put(self, event_id: str, text: str) -> None:
        texts = self._texts
        if event_id in texts:
            texts.move_to_end(event_id)
        texts[event_id] = text
        while len(texts) > self.capacity:
            texts.popitem(last=False)

    def on_delivered(self, batch: Delivered) -> None:
        if batch.outcome != "enriched" or not self.capacity:
            return
        put = self.put
        for event in batch.events:
            put(event.id, event.text)
