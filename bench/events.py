"""Bench events: the sample texts cycled to N events, pre-encoded so that sending one costs a concatenation.

Each message carries `ts` = the moment it was (or was scheduled to be) sent, in epoch ms, so the worker's
deadline and the reader's latency both start at send time. Everything else is encoded before the clock
starts: `b'{"ts":' + digits + b',' + rest`, where `rest` is the rest of the JSON object.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from pipeline.samples import SAMPLE_EVENTS, sample

# What the peers of `bench identity` (aiokafka, Quix, Faust agent) add to each event: the field our worker
# adds with the identity model, minus its latencies.
IDENTITY_ANALYSIS = {"label": "unknown", "score": 0.0}


@dataclass(frozen=True, slots=True)
class BenchEvent:
    key: bytes | None  # the event's `key` (same customer → same partition), as the producer sends it
    id: bytes  # unique per run and step; the worker uses it as the enriched record's key
    rest: bytes  # the JSON object after its opening brace and the `ts` member: `"id":...}`

    def encode(self, ts_ms: int) -> bytes:
        return b'{"ts":%d,%s' % (ts_ms, self.rest)


def load_docs(path: Path | None = None) -> list[dict]:
    """The valid events of a JSONL file (JSON objects with a string `text`), in file order; with no path, the
    sample events shipped in the package."""
    raw = path.read_bytes() if path is not None else sample(SAMPLE_EVENTS).read_bytes()
    docs = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        doc = orjson.loads(line)
        if isinstance(doc, dict) and isinstance(doc.get("text"), str):
            docs.append(doc)
    if not docs:
        raise ValueError(f"{path or SAMPLE_EVENTS} holds no events with a `text`")
    return docs


def cycled_texts(docs: Sequence[dict], n: int) -> list[str]:
    """The texts of `docs`, cycled to n: the bare model and the pipeline see exactly these."""
    return [docs[i % len(docs)]["text"] for i in range(n)]


def make_events(docs: Sequence[dict], n: int, prefix: str) -> list[BenchEvent]:
    """n events cycling through `docs`, ids `<prefix>-000000`...; any `ts` of the sample is replaced."""
    return events_at(docs, range(n), prefix)


def events_at(docs: Sequence[dict], indices: Iterable[int], prefix: str) -> list[BenchEvent]:
    """The events of `make_events` at these indices only (a share of a step, for one of several senders)."""
    out = []
    for i in indices:
        doc = {k: v for k, v in docs[i % len(docs)].items() if k != "ts"}
        doc["id"] = f"{prefix}-{i:06d}"
        key = doc.get("key")
        body = orjson.dumps(doc)
        out.append(BenchEvent(key.encode() if isinstance(key, str) else None, doc["id"].encode(), body[1:]))
    return out


def ids_with_prefix(keys: Iterable[bytes | None], prefix: str) -> set[bytes]:
    """The distinct record keys that start with `<prefix>-` (the enriched record's key is the event id)."""
    p = (prefix + "-").encode()
    return {k for k in keys if k is not None and k.startswith(p)}
