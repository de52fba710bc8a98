"""bench/languages.py: per-language accuracy from the enriched records (no broker, no worker)."""

from __future__ import annotations

import orjson

from bench.languages import accuracy


def record(label: str, lang: str, model: str) -> tuple[float, bytes]:
    return 0.0, orjson.dumps({"analysis": {"label": label, "lang": lang, "model": {"name": model}}})


def test_accuracy_per_language_and_over_all() -> None:
    docs = [
        {"text": "a", "attrs": {"lang": "de", "expected_label": "billing"}},
        {"text": "b", "attrs": {"lang": "de", "expected_label": "shipping"}},
        {"text": "c", "attrs": {"lang": "en", "expected_label": "praise"}},
        {"text": "d", "attrs": {"lang": "ar", "expected_label": "praise"}},
    ]
    records = {
        b"after-000000": record("billing", "de", "multi"),
        b"after-000001": record("billing", "de", "multi"),
        b"after-000002": record("praise", "en", "english"),
        b"after-000003": record("praise", "fa", "multi"),
    }
    r = accuracy(docs, records, "after")
    assert list(r) == ["de", "en", "ar", "all"]
    assert r["de"] == {"events": 2, "accuracy": 0.5, "lang_id_accuracy": 1.0, "models": {"multi": 2}}
    assert r["ar"]["accuracy"] == 1.0 and r["ar"]["lang_id_accuracy"] == 0.0
    assert r["all"]["events"] == 4 and r["all"]["accuracy"] == 0.75
    assert r["all"]["models"] == {"multi": 3, "english": 1}
