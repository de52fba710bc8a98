"""Extractive choice: nearest the centroid, deterministic, no duplicates, arrival order."""

from __future__ import annotations

import numpy as np

from pipeline.analytics.extractive import extractive_summary, nearest_to_centroid, sample_evenly


def unit(*rows: list[float]) -> np.ndarray:
    a = np.array(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_nearest_to_centroid_picks_the_central_rows() -> None:
    emb = unit([1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1])  # centroid leans to the first three
    assert nearest_to_centroid(emb, 2) == [2, 1]  # most central first


def test_ties_go_to_the_earlier_text_and_the_result_is_stable() -> None:
    emb = unit([1, 0], [1, 0], [1, 0])
    assert nearest_to_centroid(emb, 2) == [0, 1]
    assert nearest_to_centroid(emb, 2) == nearest_to_centroid(emb.copy(), 2)


def test_summary_skips_duplicates_and_keeps_arrival_order() -> None:
    texts = ["outlier about praise", "Card declined", "card   declined", "Payment failed twice"]
    emb = unit([0, 1], [1, 0.05], [1, 0.05], [1, 0.1])
    summary, chosen = extractive_summary(texts, emb, 2)
    assert chosen == [1, 3]
    assert summary == "Card declined | Payment failed twice"


def test_empty_and_k_larger_than_window() -> None:
    assert extractive_summary([], np.zeros((0, 2), dtype=np.float32), 2) == ("", [])
    summary, chosen = extractive_summary(["only one"], unit([1, 0]), 3)
    assert chosen == [0] and summary == "only one"


def test_long_texts_are_clipped() -> None:
    summary, _ = extractive_summary(["x" * 500], unit([1, 0]), 1)
    assert len(summary) == 240 and summary.endswith("...")


def test_sample_evenly_spreads_and_includes_both_ends() -> None:
    assert sample_evenly(5, 10) == [0, 1, 2, 3, 4]
    picked = sample_evenly(100, 5)
    assert picked[0] == 0 and picked[-1] == 99 and len(picked) == 5
    assert sample_evenly(100, 1) == [0]


def test_a_window_over_several_labels_gets_the_central_texts_of_each_label() -> None:
    from pipeline.analytics.extractive import labelled_extractive_summary

    texts = ["card charged twice", "invoice wrong", "parcel late", "courier lost it", "box damaged", "bill high"]
    labels = ["billing", "billing", "delivery", "delivery", "delivery", "billing"]
    emb = unit([1, 0, 0.1], [1, 0, 0], [0, 1, 0], [0, 1, 0.1], [0, 1, -0.1], [1, 0, -0.1])
    summary, chosen = labelled_extractive_summary(texts, labels, emb, 2, [("delivery", 3), ("billing", 3)])
    assert summary == "delivery (3): parcel late; billing (3): invoice wrong"
    assert chosen == [2, 1]


def test_a_label_missing_from_the_sample_is_left_out() -> None:
    from pipeline.analytics.extractive import labelled_extractive_summary

    emb = unit([1, 0], [1, 0.1])
    summary, chosen = labelled_extractive_summary(["a1", "a2"], ["a", "a"], emb, 4, [("a", 2), ("b", 9)])
    assert summary == "a (2): a1 | a2" and chosen == [0, 1]
