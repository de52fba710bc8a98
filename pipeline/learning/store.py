"""What analysts taught, as kept in the compacted learning topic (`topics.learning`, one partition): the records,
their keys, and `Taught`, the state every worker rebuilds by reading the topic from its start.

    key                 value (JSON)                                           null value (tombstone)
    example:<sha256>    {"kind": "example", "text", "label", "by", "ts", "resolves"}   the example is withdrawn
    label:<name>        {"kind": "label", "name", "description", "by", "ts"}          -
    lookup:<feedback>   {"kind": "lookup", "id", "label", "by", "ts", "asked_ms"}     the lookup is answered/expired
    head                {"kind": "head", "version", "head_b64"}                       -

Convergence: the topic has one partition, so every worker applies the same records in the same order and holds
the same `Taught` once it has read to the same offset; the head is a pure function of `Taught` (sorted examples,
labels, the encoder), so workers that read the same records compute the same head and the same version. The
`head` record lets a restarted worker load that head instead of training it again: it is used only when its
version is the one computed from the examples read.

Compaction keeps the latest value per key, which is all `Taught` needs: an example taught twice (the same text)
is one example with the latest label; a tombstone removes a key. Pure: no I/O here.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

HEAD_KEY = "head"
Change = Literal["examples", "labels", "lookup", "head"]


@dataclass(frozen=True, slots=True)
class Lookup:
    """Feedback by an id its owner did not know: any worker that knows the id answers with the example."""

    ref: str  # where the feedback was read: topic:partition:offset
    id: str
    label: str
    by: str | None
    ts_ms: int | None
    asked_ms: int


@dataclass(frozen=True, slots=True)
class StoredHead:
    version: str
    data: bytes


@dataclass(slots=True)
class Taught:
    """Everything read from the learning topic so far (latest value per key, in the order first written)."""

    examples: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (text, label)
    labels: dict[str, str] = field(default_factory=dict)  # label added through feedback -> description
    lookups: dict[str, Lookup] = field(default_factory=dict)  # feedback ref -> lookup
    head: StoredHead | None = None
    resolved: dict[str, str] = field(default_factory=dict)  # feedback ref -> example key, of answered lookups

    def apply(self, key: bytes | None, value: bytes | None) -> Change | None:
        """Apply one record of the topic; what it changed (None: nothing, or a record not understood)."""
        if key is None:
            return None
        k = key.decode("utf-8", "replace")
        doc = _json(value)
        if k.startswith("example:"):
            if doc is None:
                return "examples" if self.examples.pop(k, None) is not None else None
            text, label = doc.get("text"), doc.get("label")
            if not isinstance(text, str) or not isinstance(label, str):
                return None
            resolves = doc.get("resolves")
            if isinstance(resolves, str):
                self.resolved[resolves] = k
            if self.examples.get(k) == (text, label):
                return None
            self.examples[k] = (text, label)
            return "examples"
        if k.startswith("label:"):
            name, description = doc.get("name") if doc else None, doc.get("description") if doc else None
            if not isinstance(name, str) or not isinstance(description, str) or self.labels.get(name) == description:
                return None
            self.labels[name] = description
            return "labels"
        if k.startswith("lookup:"):
            ref = k[len("lookup:") :]
            if doc is None:
                self.resolved.pop(ref, None)
                return "lookup" if self.lookups.pop(ref, None) is not None else None
            lookup = _lookup(ref, doc)
            if lookup is None:
                return None
            self.lookups[ref] = lookup
            return "lookup"
        if k == HEAD_KEY and doc is not None:
            version, data = doc.get("version"), doc.get("head_b64")
            if not isinstance(version, str) or not isinstance(data, str):
                return None
            try:
                self.head = StoredHead(version, base64.b64decode(data, validate=True))
            except ValueError:
                return None
            return "head"
        return None

    def training_set(self, label_names: Sequence[str], max_examples: int) -> tuple[list[str], list[str]]:
        """`training_set(self.examples.items(), ...)`."""
        return training_set(list(self.examples.items()), label_names, max_examples)


def training_set(
    examples: Sequence[tuple[str, tuple[str, str]]], label_names: Sequence[str], max_examples: int
) -> tuple[list[str], list[str]]:
    """Texts and labels to train on, of (key, (text, label)) pairs in the order read: the examples whose label
    is in `label_names`, the latest `max_examples`, sorted by key (so the set, not the order it was read in,
    decides the head)."""
    known = set(label_names)
    keep = [(k, t, lab) for k, (t, lab) in examples if lab in known][-max_examples:]
    keep.sort()
    return [t for _, t, _ in keep], [lab for _, _, lab in keep]


def version_of(
    encoder_hash: str,
    label_names: Sequence[str],
    new_labels: Mapping[str, str],
    texts: Sequence[str],
    labels: Sequence[str],
) -> str:
    """`head-<examples>-<hash>`: the same encoder, labels and examples give the same version on every worker."""
    h = hashlib.sha256()
    h.update(orjson.dumps([encoder_hash, list(label_names), sorted(new_labels.items()), list(texts), list(labels)]))
    return f"head-{len(texts)}-{h.hexdigest()[:10]}"


# ---- records ------------------------------------------------------------------------------------------------
def example_record(text: str, label: str, *, by: str | None, ts_ms: int | None, resolves: str | None = None) -> bytes:
    return orjson.dumps({"kind": "example", "text": text, "label": label, "by": by, "ts": ts_ms, "resolves": resolves})


def label_record(name: str, description: str, *, by: str | None, ts_ms: int | None) -> bytes:
    return orjson.dumps({"kind": "label", "name": name, "description": description, "by": by, "ts": ts_ms})


def lookup_record(lookup: Lookup) -> bytes:
    return orjson.dumps(
        {
            "kind": "lookup",
            "id": lookup.id,
            "label": lookup.label,
            "by": lookup.by,
            "ts": lookup.ts_ms,
            "asked_ms": lookup.asked_ms,
        }
    )


def head_record(version: str, data: bytes) -> bytes:
    return orjson.dumps({"kind": "head", "version": version, "head_b64": base64.b64encode(data).decode("ascii")})


def lookup_key(ref: str) -> bytes:
    return f"lookup:{ref}".encode()


def _json(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _lookup(ref: str, doc: dict[str, Any]) -> Lookup | None:
    ident, label, asked = doc.get("id"), doc.get("label"), doc.get("asked_ms")
    if not isinstance(ident, str) or not isinstance(label, str) or not isinstance(asked, int):
        return None
    by, ts = doc.get("by"), doc.get("ts")
    return Lookup(ref, ident, label, by if isinstance(by, str) else None, ts if isinstance(ts, int) else None, asked)
