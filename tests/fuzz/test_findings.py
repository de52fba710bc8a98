"""Regression tests for what the hostile corpus found (offline reproductions; the end-to-end ones are in
tests/e2e/test_hostile_input.py): timestamps that are ISO 8601 but not RFC 3339, and DLQ records too big
for the worker's producer.
"""

from __future__ import annotations

import orjson
import pytest
from faust.types.settings.settings import Settings as FaustSettings

from pipeline.config import InputSettings
from pipeline.ingest.validate import Rejection, validate
from pipeline.output.records import dlq_record
from schemas import Origin
from tests.fuzz.corpus import MIB, NOT_RFC3339

LIMITS = InputSettings()
ORIGIN = Origin("events", 0, 1, key=b"k", headers=(("h", b"v"),), timestamp_ms=1_700_000_000_000)
# Faust's default `producer_max_request_size`; pipeline/faust_app.py does not set it.
WORKER_MAX_REQUEST = FaustSettings.producer_max_request_size.default


@pytest.mark.parametrize("ts", NOT_RFC3339)
def test_ts_that_is_not_rfc3339_is_rejected(ts: str) -> None:
    result = validate(orjson.dumps({"text": "ok", "ts": ts}), ORIGIN, LIMITS)
    assert isinstance(result, Rejection) and result.type == "bad_timestamp", f"{ts!r} accepted: {result!r}"


def dlq_size(value: bytes) -> int:
    result = validate(value, ORIGIN, LIMITS)
    assert isinstance(result, Rejection)
    return len(dlq_record(result.type, result.message, ORIGIN, value)) + len(ORIGIN.key or b"")


def test_dlq_record_of_a_message_just_over_the_limit_fits() -> None:
    assert dlq_size(b"x" * (LIMITS.max_event_bytes + 1)) < WORKER_MAX_REQUEST


@pytest.mark.parametrize("size", [800_000, MIB - 1024])
def test_dlq_record_of_any_message_a_broker_accepts_fits_the_worker_producer(size: int) -> None:
    """Brokers accept messages up to about 1 MiB by default (message.max.bytes 1048588; noida-db refuses
    from 1 MiB on): the DLQ record of each must still be sendable, or the message can never be acked."""
    assert dlq_size(b"x" * size) < WORKER_MAX_REQUEST
