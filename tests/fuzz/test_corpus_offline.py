"""The whole hostile corpus (tests/fuzz/corpus.py) through `validate` and `dlq_record`, offline (no broker).

Every item: no exception, an outcome its category allows, a Rejection type that the DLQ schema knows, and a
DLQ record that carries the message back byte for byte. Validation must not hold on to what it read:
memory is traced over the whole run. Run with `-s` for the counts per category and per rejection type.
"""

from __future__ import annotations

import base64
import hashlib
import random
import time
import tracemalloc
from collections import Counter, defaultdict

import orjson
import pytest
from jsonschema import Draft202012Validator

import pipeline.ingest.validate as validate_module
from pipeline.config import InputSettings
from pipeline.ingest.validate import Rejection, validate
from pipeline.output.records import DLQ_MAX_VALUE_BYTES, dlq_record
from schemas import DLQ_ERROR_TYPES, Event, Origin, load_schema
from schemas.types import FEEDBACK_ERROR_TYPES
from tests.fuzz.corpus import CATEGORIES, MAX_BYTES, MIB, SEED, Hostile, allows, corpus, digest, generate

LIMITS = InputSettings()
KAFKA_TS = 1_700_000_000_000
SCHEMA_SAMPLE = 1000


def origin_of(i: int, item: Hostile) -> Origin:
    return Origin("events", i % 4, i, item.key, tuple(item.headers), KAFKA_TS)


def outcome_of(result: Event | Rejection) -> str:
    return result.type if isinstance(result, Rejection) else "valid"


@pytest.fixture(scope="module")
def items() -> tuple[Hostile, ...]:
    return corpus()


def test_corpus_size_and_categories(items: tuple[Hostile, ...]) -> None:
    assert len(items) >= 10_000
    per_category = Counter(it.category for it in items)
    assert per_category == {name: count for name, (_, count) in CATEGORIES.items()}
    assert 0.015 <= per_category["valid"] / len(items) <= 0.03

    values = [it.value for it in items]
    assert None in values and b"" in values
    sizes = [len(v) for v in values if v]
    assert sum(MAX_BYTES < s < 2 * MAX_BYTES for s in sizes) >= 20  # a bit over the limit
    assert sum(s >= MIB for s in sizes) >= 10  # far over it
    assert any(v and v.startswith(b"[" * 5000) for v in values)  # 5000 levels
    keys = [it.key for it in items]
    assert None in keys and b"" in keys and max(len(k) for k in keys if k) >= 100_000
    headers = [h for it in items for h in it.headers]
    assert any(v is None for _, v in headers)
    assert any(n == "" for n, _ in headers) and any(not n.isascii() for n, _ in headers)
    assert max(len(it.headers) for it in items) >= 50


def test_corpus_is_deterministic(items: tuple[Hostile, ...]) -> None:
    assert digest(generate(SEED)) == digest(items)
    assert digest(generate(SEED + 1)) != digest(items)


def test_every_item_validates_as_expected(items: tuple[Hostile, ...]) -> None:
    """No exception, an allowed outcome, a known error type, no slow message."""
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    wrong: list[str] = []
    errors: list[str] = []
    slowest = (0.0, "", 0)
    t0 = time.perf_counter()
    for i, item in enumerate(items):
        started = time.perf_counter()
        try:
            result = validate(item.value, origin_of(i, item), LIMITS)
        except Exception as exc:  # the point of the test: report them all, do not stop at the first
            errors.append(f"#{i} {item.category} ({item.note[:80]}): {exc!r}")
            continue
        took = time.perf_counter() - started
        if took > slowest[0]:
            slowest = (took, f"#{i} {item.category} ({item.note[:60]})", i)
        outcome = outcome_of(result)
        outcomes[item.category][outcome] += 1
        if isinstance(result, Rejection) and (result.type not in DLQ_ERROR_TYPES or not result.message):
            wrong.append(f"#{i} {item.category}: bad rejection {result!r}")
        elif not allows(item.expect, outcome):
            wrong.append(f"#{i} {item.category} ({item.note[:80]}): {outcome}, expected {sorted(item.expect)}")
    elapsed = time.perf_counter() - t0

    total: Counter[str] = Counter()
    for c in outcomes.values():
        total.update(c)
    print(f"\n{len(items)} items in {elapsed:.2f}s; slowest {slowest[0] * 1000:.1f} ms: {slowest[1]}")
    print(f"{'category':<22}{'items':>7}  outcomes")
    for name in CATEGORIES:
        c = outcomes[name]
        print(f"{name:<22}{sum(c.values()):>7}  " + ", ".join(f"{k} {v}" for k, v in c.most_common()))
    print(f"{'all':<22}{sum(total.values()):>7}  " + ", ".join(f"{k} {v}" for k, v in total.most_common()))

    assert not errors, f"{len(errors)} exceptions, e.g.:\n" + "\n".join(errors[:10])
    assert not wrong, f"{len(wrong)} unexpected outcomes, e.g.:\n" + "\n".join(wrong[:10])
    # Every error type but model_error (only the model path gives it) and feedback's is reached, and no other.
    assert set(total) == {"valid", *DLQ_ERROR_TYPES} - {"model_error", *FEEDBACK_ERROR_TYPES}
    # A guard against pathological (quadratic, exponential) inputs, not a benchmark: the slowest message is
    # timed again, best of 3, so a busy machine's preemption does not count; a pathological one stays slow.
    item = items[slowest[2]]
    again = []
    for _ in range(3):
        started = time.perf_counter()
        validate(item.value, origin_of(slowest[2], item), LIMITS)
        again.append(time.perf_counter() - started)
    assert min(again) < 0.25, f"one message takes {min(again):.3f}s to validate: {slowest[1]}"


def validation_bytes() -> int:
    """Bytes traced now that were allocated with the validator on the stack: what another thread of the test
    process allocates meanwhile (a client a finished test left reconnecting, say) is not validation's doing."""
    only_validation = [tracemalloc.Filter(True, validate_module.__file__, all_frames=True)]
    return sum(t.size for t in tracemalloc.take_snapshot().filter_traces(only_validation).traces)


def test_validation_keeps_nothing(items: tuple[Hostile, ...]) -> None:
    """Traced over two passes of the whole corpus (70 MiB of values each), validation holds about one
    message at a time and keeps nothing. What stays traced afterwards are bounded caches that keep their
    size whatever the input (orjson's key cache, 2048 entries; the tuple and float free lists: about 250 KiB
    in all, filled over the first passes). Keeping even 60 bytes per message would add 650 KiB per pass."""
    origins = [origin_of(i, item) for i, item in enumerate(items)]
    tracemalloc.start(16)  # frames enough to find the validator under orjson's and the stdlib's calls
    try:
        base = validation_bytes()
        peak_base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for item, origin in zip(items, origins, strict=True):
            validate(item.value, origin, LIMITS)
        after_first = validation_bytes()
        for item, origin in zip(items, origins, strict=True):
            validate(item.value, origin, LIMITS)
        after_second = validation_bytes()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    corpus_bytes = sum(len(it.value or b"") for it in items)
    print(
        f"\ntraced memory, 2 x {len(items)} items ({corpus_bytes / 2**20:.1f} MiB of values each): "
        f"first pass {(after_first - base) / 1024:+.1f} KiB, "
        f"second pass {(after_second - after_first) / 1024:+.1f} KiB, "
        f"peak {(peak - peak_base) / 2**20:+.2f} MiB"
    )
    assert after_second - base < 512 * 1024, "validation leaves more than its bounded caches behind"
    assert after_second - after_first < 256 * 1024, "memory grows with the input: validation keeps something"
    assert peak - peak_base < 16 * 2**20, "validation holds far more than one message at a time"


def test_dlq_record_of_every_rejection(items: tuple[Hostile, ...]) -> None:
    """dlq_record carries value, key and headers back byte for byte; a sample validates against the schema."""
    schema = Draft202012Validator(load_schema("dlq"))
    rng = random.Random(SEED)
    per_type: Counter[str] = Counter()
    records: list[dict] = []
    first_of: dict[str, int] = {}
    for i, item in enumerate(items):
        origin = origin_of(i, item)
        result = validate(item.value, origin, LIMITS)
        if not isinstance(result, Rejection):
            continue
        per_type[result.type] += 1
        doc = orjson.loads(dlq_record(result.type, result.message, origin, item.value))
        assert doc["error"] == {"type": result.type, "message": result.message}
        o = doc["original"]
        assert (o["topic"], o["partition"], o["offset"], o["timestamp_ms"]) == ("events", i % 4, i, KAFKA_TS)
        if item.value is not None and len(item.value) > DLQ_MAX_VALUE_BYTES:
            # Cut to fit a broker's record limit; size and hash name the whole value.
            assert unb64(o["value_b64"]) == item.value[:DLQ_MAX_VALUE_BYTES] and o["value_truncated"] is True
            assert o["value_bytes"] == len(item.value)
            assert o["value_sha256"] == hashlib.sha256(item.value).hexdigest()
        else:
            assert unb64(o["value_b64"]) == item.value and "value_truncated" not in o
        assert unb64(o["key"]) == item.key
        assert [(name, unb64(v)) for name, v in o["headers"]] == item.headers
        assert isinstance(doc["failed_at"], int)
        first_of.setdefault(result.type, len(records))
        first_of.setdefault(f"category:{item.category}", len(records))
        records.append(doc)

    sample = set(rng.sample(range(len(records)), min(SCHEMA_SAMPLE, len(records)))) | set(first_of.values())
    for j in sorted(sample):
        errors = list(schema.iter_errors(records[j]))
        assert not errors, f"record {j} breaks dlq.schema.json: {errors[0].message}"
    print(f"\n{len(records)} DLQ records round-tripped, {len(sample)} checked against dlq.schema.json")
    print(", ".join(f"{k} {v}" for k, v in per_type.most_common()))


def unb64(v: str | None) -> bytes | None:
    return None if v is None else base64.b64decode(v, validate=True)
