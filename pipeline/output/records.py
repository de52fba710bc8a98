"""Build the bytes of each output record (schemas/enriched.schema.json, schemas/dlq.schema.json)."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from schemas import Event, Origin

# Headers on an events.deferred record: where the event was first read, so its id stays the same.
ORIGIN_HEADER = "slmstream-origin"
ORIGIN_TS_HEADER = "slmstream-origin-ts"


@dataclass(slots=True)
class Classification:
    """One text's label and scores. Not frozen: built once per event on the hot path, where a frozen dataclass's
    `__init__` (one `object.__setattr__` per field, eight fields) cost ~1.8 µs against ~0.3 µs; nothing changes
    it after the classifier returns it."""

    label: str
    score: float
    scores: dict[str, float]
    # `scores` rounded as the enriched record carries them (`round(v, 4)`), when the classifier rounded a whole
    # batch at once (`round_rows`); None: enriched_record rounds them itself.
    rounded: dict[str, float] | None = field(default=None, compare=False, repr=False)
    head: str | None = None  # the version of the learned head that labeled it (None: zero-shot)
    # The text's language (pipeline/model/language.py) and whether the encoder that read it was trained on it;
    # None: no language ID ran (the record then carries neither).
    lang: str | None = field(default=None, compare=False)
    lang_supported: bool = field(default=True, compare=False)
    # The encoder that classified it, when the batch was split among encoders by language (router.py);
    # None: the batch's model.
    model: ModelInfo | None = field(default=None, compare=False, repr=False)


SCORE_DIGITS = 4


def round_rows(x: np.ndarray, ndigits: int | Sequence[int] = SCORE_DIGITS) -> list[list[float]]:
    """`[[round(float(v), ndigits) for v in row] for row in x]`, bit for bit, for a 2-D array at once;
    `ndigits` may also give each row its own (one call for rows that round differently: a numpy call costs
    about as much as rounding a few values in Python, so a batch's roundings are done in as few as can be).

    numpy's `rint(v * 10**n) / 10**n` is Python's correctly rounded `round(v, n)` whenever `v * 10**n` is
    computed exactly or is not within its rounding error of a tie (x.5): the division of an integer by
    10**n is correctly rounded, as Python's decimal → float step is. The few values where it may not be
    (near a tie, huge, not finite) are rounded by Python.
    """
    v = np.asarray(x, dtype=np.float64)
    digits = [ndigits] * len(v) if isinstance(ndigits, int) else list(ndigits)
    if len(digits) != len(v):
        raise ValueError(f"{len(v)} rows but {len(digits)} ndigits")
    scale = np.array([10.0**n for n in digits]).reshape(len(v), 1)  # 10**n is exact for the n used here
    with np.errstate(over="ignore", invalid="ignore"):
        t = v * scale
        out = np.rint(t) / scale
        a = np.abs(t)
        doubt = ~(a < 2.0**52) | (np.abs(t - np.floor(t) - 0.5) <= np.spacing(a))
    rows: list[list[float]] = out.tolist()
    if doubt.any():
        for i, j in zip(*np.nonzero(doubt), strict=True):
            rows[i][j] = round(float(v[i, j]), digits[i])
    return rows


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    hash: str


def enriched_record(
    event: Event,
    result: Classification,
    model: ModelInfo,
    taxonomy_version: str,
    *,
    deadline_met: bool,
    degraded: bool,
    queue_ms: float,
    model_ms: float,
    total_ms: float,
    facts: dict[str, Any] | None = None,
) -> bytes:
    doc = dict(event.fields)
    doc["id"] = event.id
    doc["ts"] = event.ts_ms
    doc["analysis"] = {
        "label": result.label,
        "score": round(result.score, SCORE_DIGITS),
        "scores": rounded if (rounded := result.rounded) is not None else _round_scores(result.scores),
        "model": {"name": (m := result.model or model).name, "hash": m.hash},
        "taxonomy_version": taxonomy_version,
        "head": result.head,
        "deadline_met": deadline_met,
        "degraded": degraded,
        "deferred": event.deferred,
        "latency_ms": {"queue": round(queue_ms, 2), "model": round(model_ms, 2), "total": round(total_ms, 2)},
    }
    if facts is not None:
        doc["facts"] = facts
    if result.lang is not None:
        doc["analysis"]["lang"] = result.lang
        doc["analysis"]["lang_supported"] = result.lang_supported
    return orjson.dumps(doc)


def enriched_records(
    events: Sequence[Event],
    results: Sequence[Classification],
    model: ModelInfo,
    taxonomy_version: str,
    *,
    deadline_met: Sequence[bool],
    degraded: bool,
    queue_ms: Sequence[float],
    model_ms: float,
    total_ms: Sequence[float],
    facts: Sequence[dict[str, Any] | None] | None = None,
) -> list[bytes]:
    """`enriched_record` for a model batch, the same bytes for each (`queue_ms` and `total_ms` are floats, as
    the scheduler computes them): what is the same for every record of the batch (the model, its time) is built
    once, and the scores and latencies are rounded a batch at once (`round_rows`: Python's `round` costs ~0.5 µs
    a call, three calls a record). `facts`: each event's joined facts (pipeline/facts/join.py)."""
    if len(results) != len(events):
        raise ValueError(f"{len(events)} events but {len(results)} results")
    model_doc = {"name": model.name, "hash": model.hash}
    model_docs: dict[ModelInfo, dict[str, str]] = {model: model_doc}  # per encoder, when routed by language
    model_rounded = round(model_ms, 2)
    columns = np.array([[r.score for r in results], queue_ms, total_ms], dtype=np.float64).reshape(3, len(events))
    scores, queues, totals = round_rows(columns, (SCORE_DIGITS, 2, 2))
    dumps = orjson.dumps
    out: list[bytes] = []
    for event, result, score, met, queue, total in zip(
        events, results, scores, deadline_met, queues, totals, strict=True
    ):
        doc = dict(event.fields)
        doc["id"] = event.id
        doc["ts"] = event.ts_ms
        rounded = result.rounded
        info = result.model
        mdoc = model_doc if info is None else model_docs.get(info)
        if mdoc is None:  # an encoder's first record in this batch
            assert info is not None
            mdoc = model_docs[info] = {"name": info.name, "hash": info.hash}
        analysis = doc["analysis"] = {
            "label": result.label,
            "score": score,
            "scores": rounded if rounded is not None else _round_scores(result.scores),
            "model": mdoc,
            "taxonomy_version": taxonomy_version,
            "head": result.head,
            "deadline_met": met,
            "degraded": degraded,
            "deferred": event.deferred,
            "latency_ms": {"queue": queue, "model": model_rounded, "total": total},
        }
        if facts is not None and (joined := facts[len(out)]) is not None:
            doc["facts"] = joined
        if result.lang is not None:
            analysis["lang"] = result.lang
            analysis["lang_supported"] = result.lang_supported
        out.append(dumps(doc))
    return out


def _round_scores(scores: dict[str, float]) -> dict[str, float]:
    return {k: round(v, SCORE_DIGITS) for k, v in scores.items()}


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


# Largest original value a DLQ record carries whole. Base64 grows it by 4/3 and brokers refuse records of
# about 1 MiB (Kafka's default, noida-db, Faust's producer): a bigger value is cut, and the record says so
# and keeps its size and hash; the whole message stays in the source topic at `original.offset`.
DLQ_MAX_VALUE_BYTES = 512 * 1024


def dlq_record(
    error_type: str, message: str, origin: Origin, value: bytes | None, *, max_value_bytes: int = DLQ_MAX_VALUE_BYTES
) -> bytes:
    original = {
        "topic": origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
        "key": _b64(origin.key[:max_value_bytes] if origin.key else origin.key),
        "value_b64": _b64(value[:max_value_bytes] if value else value),
        "headers": [[name, _b64(v)] for name, v in origin.headers],
        "timestamp_ms": origin.timestamp_ms,
    }
    if value and len(value) > max_value_bytes:
        original["value_truncated"] = True
        original["value_bytes"] = len(value)
        original["value_sha256"] = hashlib.sha256(value).hexdigest()
    return orjson.dumps(
        {"error": {"type": error_type, "message": message}, "original": original, "failed_at": int(time.time() * 1000)}
    )


def deferred_headers(origin: Origin) -> list[tuple[str, bytes | None]]:
    """The original headers plus where the event came from."""
    own = [(k, v) for k, v in origin.headers if k not in (ORIGIN_HEADER, ORIGIN_TS_HEADER)]
    own.append((ORIGIN_HEADER, origin.ref.encode()))
    if origin.timestamp_ms is not None:
        own.append((ORIGIN_TS_HEADER, str(origin.timestamp_ms).encode()))
    return own


def origin_of_deferred(deferred: Origin) -> Origin:
    """The original Origin of an events.deferred message (its own Origin when the header is missing)."""
    headers = dict(deferred.headers)
    ref = headers.get(ORIGIN_HEADER)
    if not ref:
        return deferred
    try:
        topic, partition, offset = ref.decode().rsplit(":", 2)
        ts_raw = headers.get(ORIGIN_TS_HEADER)
        ts = int(ts_raw) if ts_raw else deferred.timestamp_ms
        original_headers = tuple((k, v) for k, v in deferred.headers if k not in (ORIGIN_HEADER, ORIGIN_TS_HEADER))
        return Origin(topic, int(partition), int(offset), deferred.key, original_headers, ts)
    except (ValueError, UnicodeDecodeError):
        return deferred
