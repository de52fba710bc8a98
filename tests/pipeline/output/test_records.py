"""pipeline/output/records.py: the batch rounding of label scores is Python's `round(v, 4)` bit for bit, and an
enriched record is the same bytes whether the classifier rounded the scores or the record does."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.output.records import Classification, ModelInfo, enriched_record, enriched_records, round_rows
from schemas import Event, Origin


def bits(v: float) -> bytes:
    return struct.pack("<d", v)  # -0.0 and 0.0 differ, as do NaNs: compare the exact double


def python_rounded(x: np.ndarray, ndigits: int = 4) -> list[list[bytes]]:
    return [[bits(round(float(v), ndigits)) for v in row] for row in x]


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6), elements=st.floats()))
def test_round_rows_is_python_round_for_any_double(x: np.ndarray) -> None:
    assert [[bits(v) for v in row] for row in round_rows(x)] == python_rounded(x)


@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
        elements=st.floats(0.0, 1.0, width=32),
    ),
    st.integers(1, 6),
)
def test_round_rows_is_python_round_for_probabilities(x: np.ndarray, ndigits: int) -> None:
    assert [[bits(v) for v in row] for row in round_rows(x, ndigits)] == python_rounded(x, ndigits)


@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6), elements=st.floats()).flatmap(
        lambda x: st.tuples(st.just(x), st.lists(st.integers(0, 6), min_size=len(x), max_size=len(x)))
    )
)
def test_round_rows_rounds_each_row_to_its_own_digits(x_digits: tuple[np.ndarray, list[int]]) -> None:
    x, digits = x_digits
    assert [[bits(v) for v in row] for row in round_rows(x, digits)] == [
        python_rounded(x[i : i + 1], n)[0] for i, n in enumerate(digits)
    ]


def test_round_rows_wants_one_ndigits_per_row() -> None:
    with pytest.raises(ValueError, match="2 rows but 3 ndigits"):
        round_rows(np.zeros((2, 3)), (4, 2, 2))


def test_round_rows_takes_ties_and_near_ties_as_python_does() -> None:
    # x.5 at the 5th decimal, exactly or within a double's error, and values where v * 1e4 is inexact
    ties = [0.00005, 0.00015, 0.12345, 0.99995, 2.675e-4, 1.00005, 0.5, 1 / 3, 1e-320, 1e300, -0.00005]
    nearby = [np.nextafter(t, d) for t in ties for d in (-np.inf, np.inf)]
    x = np.array([ties, nearby[: len(ties)], nearby[len(ties) :]], dtype=np.float64)
    assert [[bits(v) for v in row] for row in round_rows(x)] == python_rounded(x)


@given(
    st.lists(st.floats(0.0, 1.0, width=32), min_size=2, max_size=5),
    st.booleans(),
    st.booleans(),
    st.floats(0.0, 1e6),
)
def test_enriched_record_is_the_same_bytes_with_scores_rounded_by_the_classifier(
    values: list[float], met: bool, degraded: bool, ms: float
) -> None:
    names = [f"label{i}" for i in range(len(values))]
    scores = dict(zip(names, values, strict=True))
    (rounded,) = round_rows(np.array([values], dtype=np.float32))
    best = max(values)
    plain = Classification(names[values.index(best)], best, scores)
    batched = Classification(plain.label, best, scores, dict(zip(names, rounded, strict=True)))
    assert batched == plain
    event = Event("e1", "some text", 1_700_000_000_000, {"text": "some text", "x": 1}, Origin("events", 0, 7))
    kwargs = dict(deadline_met=met, degraded=degraded, queue_ms=ms, model_ms=ms / 3, total_ms=ms * 2)
    info = ModelInfo("m", "sha256:m")
    record = enriched_record(event, batched, info, "v1", **kwargs)  # type: ignore[arg-type]
    assert record == enriched_record(event, plain, info, "v1", **kwargs)  # type: ignore[arg-type]
    assert orjson.loads(record)["analysis"]["scores"] == {k: round(v, 4) for k, v in scores.items()}


# ---- a model batch's records at once: the same bytes as one record at a time ---------------------------------
any_ms = st.floats(allow_nan=True, allow_infinity=True) | st.floats(-1e3, 1e7)
batch_rows = st.lists(
    st.tuples(
        st.lists(st.floats(0.0, 1.0, width=32), min_size=2, max_size=4),  # label scores
        st.booleans(),  # deadline met
        any_ms,  # queue_ms
        any_ms,  # total_ms
        st.booleans(),  # rounded by the classifier
        st.booleans(),  # deferred
        st.dictionaries(st.text(max_size=4), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=4), max_size=3),
    ),
    max_size=8,
)


@given(batch_rows, st.booleans(), any_ms)
def test_enriched_records_are_the_bytes_of_enriched_record_for_each(
    rows: list[tuple[list[float], bool, float, float, bool, bool, dict[str, object]]], degraded: bool, model_ms: float
) -> None:
    events, results = [], []
    for i, (values, _, _, _, pre_rounded, deferred, extra) in enumerate(rows):
        names = [f"label{j}" for j in range(len(values))]
        scores = dict(zip(names, values, strict=True))
        (rounded,) = round_rows(np.array([values], dtype=np.float32))
        best = max(values)
        results.append(
            Classification(
                names[values.index(best)], best, scores, dict(zip(names, rounded, strict=True)) if pre_rounded else None
            )
        )
        fields = {**extra, "text": "some text"}
        event = Event(f"e{i}", "some text", 1_700_000_000_000 + i, fields, Origin("events", 0, i), deferred)
        events.append(event)
    info = ModelInfo("m", "sha256:m")
    mets, queues, totals = [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]
    batch = enriched_records(
        events,
        results,
        info,
        "v1",
        deadline_met=mets,
        degraded=degraded,
        queue_ms=queues,
        model_ms=model_ms,
        total_ms=totals,
    )
    one_by_one = [
        enriched_record(e, r, info, "v1", deadline_met=m, degraded=degraded, queue_ms=q, model_ms=model_ms, total_ms=t)
        for e, r, m, q, t in zip(events, results, mets, queues, totals, strict=True)
    ]
    assert batch == one_by_one
