"""pipeline/learning/store.py: the learning topic's records → `Taught`; tombstones; the training set and the
version are functions of the example set, not of the order it was read in."""

from __future__ import annotations

from pipeline.learning.feedback import example_key
from pipeline.learning.store import (
    HEAD_KEY,
    Lookup,
    Taught,
    example_record,
    head_record,
    label_record,
    lookup_key,
    lookup_record,
    version_of,
)


def ex(text: str, label: str, resolves: str | None = None) -> tuple[bytes, bytes]:
    return example_key(text).encode(), example_record(text, label, by=None, ts_ms=None, resolves=resolves)


def test_examples_latest_label_wins_and_tombstones_remove() -> None:
    t = Taught()
    assert t.apply(*ex("charged twice", "shipping")) == "examples"
    assert t.apply(*ex("charged twice", "billing")) == "examples"
    assert t.apply(*ex("charged twice", "billing")) is None  # a replay changes nothing
    assert list(t.examples.values()) == [("charged twice", "billing")]
    assert t.apply(example_key("charged twice").encode(), None) == "examples"
    assert t.examples == {}
    assert t.apply(None, b"{}") is None and t.apply(b"example:x", b"not json") is None


def test_labels_lookups_and_head() -> None:
    t = Taught()
    assert t.apply(b"label:fraud", label_record("fraud", "card used without consent", by="ana", ts_ms=None)) == "labels"
    assert t.labels == {"fraud": "card used without consent"}
    lookup = Lookup("fb:0:7", "e1", "fraud", "ana", None, 123)
    assert t.apply(lookup_key("fb:0:7"), lookup_record(lookup)) == "lookup"
    assert t.lookups == {"fb:0:7": lookup}
    t.apply(*ex("some text", "fraud", resolves="fb:0:7"))
    assert t.resolved == {"fb:0:7": example_key("some text")}
    assert t.apply(lookup_key("fb:0:7"), None) == "lookup"
    assert t.lookups == {} and t.resolved == {}
    assert t.apply(HEAD_KEY.encode(), head_record("head-1-abc", b"\x00bytes")) == "head"
    assert t.head is not None and (t.head.version, t.head.data) == ("head-1-abc", b"\x00bytes")


def test_training_set_and_version_do_not_depend_on_read_order() -> None:
    records = [ex("a", "billing"), ex("b", "shipping"), ex("c", "gone"), ex("d", "billing")]
    one, two = Taught(), Taught()
    for r in records:
        one.apply(*r)
    for r in reversed(records):
        two.apply(*r)
    names = ["billing", "shipping"]
    assert one.training_set(names, 100) == two.training_set(names, 100)
    texts, labels = one.training_set(names, 100)
    assert sorted(texts) == ["a", "b", "d"]  # the example of a label not in the taxonomy is left out
    v1 = version_of("sha256:enc", names, {}, texts, labels)
    assert v1 == version_of("sha256:enc", names, {}, *two.training_set(names, 100))
    assert v1.startswith("head-3-")
    assert v1 != version_of("sha256:other", names, {}, texts, labels)
    assert v1 != version_of("sha256:enc", names, {"fraud": "x"}, texts, labels)
    assert len(one.training_set(names, 2)[0]) == 2
