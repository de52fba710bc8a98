"""pipeline/learning/head.py: training (deterministic, order-free), blending with the prototype scores,
serialisation without pickle.

Embeddings are synthetic: one cluster per label around a shared offset (as sentence embeddings share a common
direction), L2-normalised; prototype scores are uniform or fixed rows, so the head's effect is visible.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.learning.head import Example, Head, examples_version, train_head

DIM = 24
NAMES = ["billing", "delivery", "app"]


def clusters(per_label: dict[str, int], seed: int = 0, spread: float = 0.15) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)  # the same clusters for every seed; the seed draws the points
    centres = {name: rng.normal(size=DIM) for name in NAMES + ["refund"]}
    offset = rng.normal(size=DIM) * 2.0
    rows, labels = [], []
    noise = np.random.default_rng(seed + 1)
    for name, n in per_label.items():
        for _ in range(n):
            rows.append(centres[name] + offset + noise.normal(size=DIM) * spread * np.linalg.norm(centres[name]))
            labels.append(name)
    x = np.array(rows, dtype=np.float64).reshape(-1, DIM)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x.astype(np.float32), labels


def uniform(n: int, k: int = len(NAMES)) -> np.ndarray:
    return np.full((n, k), 1.0 / k, dtype=np.float32)


def test_no_examples_returns_the_prototype_scores_unchanged() -> None:
    head = train_head(np.zeros((0, DIM), dtype=np.float32), [], NAMES, version="head-0-x")
    x, _ = clusters({"billing": 3})
    proto = np.random.default_rng(3).dirichlet(np.ones(3), size=3).astype(np.float32)
    assert head.scores(x, proto) is proto
    assert head.trained == [] and head.counts == dict.fromkeys(NAMES, 0)


def test_one_label_with_examples_changes_nothing_yet() -> None:
    x, labels = clusters({"billing": 5})
    head = train_head(x, labels, NAMES, version="v")
    proto = uniform(len(x))
    assert head.scores(x, proto) is proto
    assert head.counts["billing"] == 5


def test_learns_the_labels_of_held_out_examples() -> None:
    x, labels = clusters({"billing": 30, "delivery": 30, "app": 30})
    test_x, test_labels = clusters({"billing": 20, "delivery": 20, "app": 20}, seed=7)
    head = train_head(x, labels, NAMES, version="v")
    probs = head.scores(test_x, uniform(len(test_x)))
    assert probs.shape == (60, 3) and probs.dtype == np.float32
    predicted = [NAMES[i] for i in probs.argmax(axis=1)]
    assert np.mean([p == t for p, t in zip(predicted, test_labels, strict=True)]) >= 0.95
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_matches_scikit_learns_logistic_regression() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, labels = clusters({"billing": 20, "delivery": 15, "app": 25}, spread=0.6)
    head = train_head(x, labels, NAMES, version="v", c=2.0, blend_k=1e-12)  # the head's share ~1: its own scores
    probe = sklearn.LogisticRegression(C=2.0, tol=1e-10, max_iter=10_000).fit(x.astype(np.float64), labels)
    test_x, _ = clusters({"billing": 10, "delivery": 10, "app": 10}, seed=11, spread=0.6)
    ours = head.scores(test_x, uniform(len(test_x)))
    theirs = probe.predict_proba(test_x.astype(np.float64))[:, [list(probe.classes_).index(n) for n in NAMES]]
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


@settings(max_examples=20, deadline=None)
@given(st.randoms(use_true_random=False))
def test_the_same_examples_in_any_order_train_the_same_head(rnd: random.Random) -> None:
    x, labels = clusters({"billing": 6, "delivery": 4, "app": 5}, spread=0.5)
    order = list(range(len(labels)))
    rnd.shuffle(order)
    a = train_head(x, labels, NAMES, version="v")
    b = train_head(x[order], [labels[i] for i in order], NAMES, version="v")
    assert a.to_bytes() == b.to_bytes()
    test_x, _ = clusters({"billing": 4, "app": 4}, seed=5)
    proto = uniform(len(test_x))
    assert np.array_equal(a.scores(test_x, proto), b.scores(test_x, proto))


def test_examples_version_names_the_set_not_its_order() -> None:
    examples = [Example("card charged twice", "billing"), Example("parcel late", "delivery")]
    version = examples_version(examples)
    assert version == examples_version(list(reversed(examples)))
    assert version.startswith("head-2-")
    assert version != examples_version([*examples, Example("app crashes", "app")])
    assert version != examples_version([Example("card charged twice", "delivery"), examples[1]])


def test_round_trip_through_bytes_scores_exactly_alike() -> None:
    x, labels = clusters({"billing": 9, "delivery": 3, "app": 1}, spread=0.5)
    head = train_head(x, labels, NAMES, version="head-13-abc", blend_k=4.0)
    data = head.to_bytes()
    back = Head.from_bytes(data)
    assert back.to_bytes() == data
    assert (back.version, back.labels, back.counts, back.trained, back.blend_k) == (
        head.version,
        head.labels,
        head.counts,
        head.trained,
        head.blend_k,
    )
    proto = np.random.default_rng(1).dirichlet(np.ones(3), size=len(x)).astype(np.float32)
    assert np.array_equal(back.scores(x, proto), head.scores(x, proto))
    assert b"pickle" not in data and not data.startswith(b"\x80")  # no pickle protocol header


@pytest.mark.parametrize(
    "data",
    [b"", b"not a head", b"SLMSTREAM-HEAD-1\n{bad json\n", b'SLMSTREAM-HEAD-1\n{"dim": 2}\n'],
)
def test_from_bytes_rejects_what_is_not_a_head(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a head"):
        Head.from_bytes(data)


def test_from_bytes_rejects_truncated_arrays() -> None:
    x, labels = clusters({"billing": 3, "delivery": 3})
    data = train_head(x, labels, NAMES, version="v").to_bytes()
    with pytest.raises(ValueError, match="not a head"):
        Head.from_bytes(data[:-4])


@settings(max_examples=30, deadline=None)
@given(
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=1, max_value=40),
    st.floats(min_value=0.5, max_value=64.0),
)
def test_blend_share_grows_with_the_examples_of_a_label(n_billing: int, n_delivery: int, k: float) -> None:
    x, labels = clusters({"billing": n_billing, "delivery": n_delivery}, spread=0.5)
    shares = train_head(x, labels, NAMES, version="v", blend_k=k).blend_weights()
    assert shares["billing"] == pytest.approx(n_billing / (n_billing + k))
    assert shares["delivery"] == pytest.approx(n_delivery / (n_delivery + k))
    assert shares["app"] == 0.0  # no examples: the prototype alone
    assert (shares["billing"] > shares["delivery"]) == (n_billing > n_delivery)


def test_few_examples_lean_on_the_prototypes_many_on_the_head() -> None:
    """A prototype that is sure of the wrong label: with 2 examples per label it still wins, with 200 the head."""
    few_x, few_labels = clusters({"billing": 2, "delivery": 2})
    many_x, many_labels = clusters({"billing": 200, "delivery": 200})
    test_x, _ = clusters({"billing": 1}, seed=9)
    wrong = np.array([[0.05, 0.9, 0.05]], dtype=np.float32)
    few = train_head(few_x, few_labels, NAMES, version="v").scores(test_x, wrong)
    many = train_head(many_x, many_labels, NAMES, version="v").scores(test_x, wrong)
    assert NAMES[int(few.argmax())] == "delivery"
    assert NAMES[int(many.argmax())] == "billing"


def test_labels_without_examples_keep_their_prototype_score() -> None:
    x, labels = clusters({"billing": 20, "delivery": 20})
    head = train_head(x, labels, NAMES, version="v")
    proto = np.random.default_rng(2).dirichlet(np.ones(3), size=len(x)).astype(np.float32)
    probs = head.scores(x, proto)
    # Equal counts: the blend keeps each row's total, so the untrained label's score is the prototype's.
    np.testing.assert_allclose(probs[:, 2], proto[:, 2], rtol=1e-5)
    np.testing.assert_allclose(probs[:, :2].sum(axis=1), proto[:, :2].sum(axis=1), rtol=1e-5)


def test_a_label_known_only_through_feedback_is_learned() -> None:
    """`refund` has no description: its prototype column is zero, the head alone votes for it."""
    names = [*NAMES, "refund"]
    x, labels = clusters({"billing": 40, "delivery": 40, "app": 40, "refund": 40})
    head = train_head(x, labels, names, version="v")
    test_x, _ = clusters({"refund": 10}, seed=4)
    proto = np.hstack([uniform(len(test_x)), np.zeros((len(test_x), 1), dtype=np.float32)])
    probs = head.scores(test_x, proto)
    assert [names[i] for i in probs.argmax(axis=1)] == ["refund"] * 10


def test_a_new_label_with_a_prototype_is_learned_before_the_others_have_examples() -> None:
    """`refund` came with a description (a prototype column); only it and `billing` have examples."""
    names = [*NAMES, "refund"]
    x, labels = clusters({"billing": 40, "refund": 40})
    head = train_head(x, labels, names, version="v")
    test_x, _ = clusters({"refund": 10}, seed=4)
    proto = uniform(len(test_x), k=4)  # the prototypes cannot tell the four labels apart
    probs = head.scores(test_x, proto)
    assert [names[i] for i in probs.argmax(axis=1)] == ["refund"] * 10


def test_scores_checks_the_prototype_shape() -> None:
    x, labels = clusters({"billing": 3, "delivery": 3})
    head = train_head(x, labels, NAMES, version="v")
    with pytest.raises(ValueError, match="prototype scores"):
        head.scores(x, uniform(len(x), k=2))


def test_train_rejects_unknown_labels_and_mismatched_rows() -> None:
    x, labels = clusters({"billing": 3, "delivery": 3})
    with pytest.raises(ValueError, match="not among the label names"):
        train_head(x, [*labels[:-1], "weather"], NAMES, version="v")
    with pytest.raises(ValueError, match="labels for embeddings"):
        train_head(x, labels[:-1], NAMES, version="v")
    with pytest.raises(ValueError, match="version"):
        train_head(x, labels, NAMES, version="")


def test_the_head_is_immutable() -> None:
    x, labels = clusters({"billing": 3, "delivery": 3})
    head = train_head(x, labels, NAMES, version="v")
    head.labels.append("weather")
    head.counts["billing"] = 99
    assert head.labels == NAMES and head.counts["billing"] == 3
    with pytest.raises(ValueError, match="read-only"):
        head._weights[0, 0] = 1.0  # noqa: SLF001 - the arrays themselves refuse writes
