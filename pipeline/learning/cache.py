"""The recent events of this worker, event id → text: how feedback by id (`{"id": ..., "label": ...}`) finds the
text to learn from.

An observer of the classify path (pipeline/output/observers.py): filled once per delivered batch with the events
whose enriched records the broker holds, so an id an analyst can see in `events.enriched` is here. Bounded: the
`capacity` most recently delivered events and at most `max_chars` characters of text in all (oldest first out);
a replayed event moves to the newest end. Runs on
the event loop only: no locks. An event this worker did not classify is in another worker's cache (feedback by
id is resolved across workers through the learning store, pipeline/learning/service.py).
"""

from __future__ import annotations

from collections import OrderedDict

from pipeline.output.observers import BaseObserver, Delivered


class RecentEvents(BaseObserver):
    def __init__(self, capacity: int, max_chars: int = 50_000_000) -> None:
        self.capacity = capacity
        self.max_chars = max_chars
        self.chars = 0
        self._texts: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._texts)

    def get(self, event_id: str) -> str | None:
        return self._texts.get(event_id)

    def put(self, event_id: str, text: str) -> None:
        texts = self._texts
        old = texts.pop(event_id, None)
        if old is not None:
            self.chars -= len(old)
        texts[event_id] = text
        self.chars += len(text)
        while texts and (len(texts) > self.capacity or self.chars > self.max_chars):
            self.chars -= len(texts.popitem(last=False)[1])

    def on_delivered(self, batch: Delivered) -> None:
        if batch.outcome != "enriched" or not self.capacity:
            return
        put = self.put
        for event in batch.events:
            put(event.id, event.text)
