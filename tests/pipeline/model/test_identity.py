"""The identity model: the whole worker path minus inference, loadable without any model files."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import Label, Settings
from pipeline.model.base import Encoder, Generator, ModelError
from pipeline.model.identity import IDENTITY, IdentityEncoder
from pipeline.runtime import load_classifier, preflight

LABELS = {
    "billing": Label(description="charges and invoices"),
    "shipping": Label(description="deliveries", examples=["where is my parcel"]),
}


def test_identity_encoder_is_an_encoder_that_computes_nothing() -> None:
    enc = IdentityEncoder()
    assert isinstance(enc, Encoder) and not isinstance(enc, Generator)
    out = enc.encode(["a", "a much longer text than the first one", ""])
    assert out.shape == (3, enc.dim)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)
    assert (out == out[0]).all()  # the same vector whatever the text
    assert enc.encode([]).shape == (0, enc.dim)


def test_identity_classifier_loads_without_model_files(tmp_path) -> None:
    settings = Settings(labels=LABELS, model={"encoder": IDENTITY, "cache_dir": str(tmp_path / "nothing-here")})
    preflight(settings)  # no manifest needed
    clf = load_classifier(settings, IDENTITY)
    assert clf.info.name == IDENTITY
    results = clf.classify(["I was charged twice", "where is my parcel"])
    n = len(clf.names)  # the config file's labels merge with these
    assert [r.score for r in results] == pytest.approx([1 / n, 1 / n])  # every label scores the same
    assert all(set(r.scores) == set(clf.names) for r in results)
    if 1 / n < settings.classifier.min_confidence:
        assert {r.label for r in results} == {"unknown"}


def test_a_real_model_name_still_needs_its_files(tmp_path) -> None:
    settings = Settings(labels=LABELS, model={"cache_dir": str(tmp_path)})
    with pytest.raises(ModelError, match="not built"):
        preflight(settings)
