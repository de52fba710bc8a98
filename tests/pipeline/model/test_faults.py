"""The test-only model fault hook (pipeline/model/faults.py): off by default, fails what it is told to."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from pipeline.model.base import ModelError
from pipeline.model.faults import FAIL_TIMES_ENV, FAIL_TOKEN_ENV, FailingModel, InjectedModelFault, with_injected_faults


class Echo:
    name = "echo"
    content_hash = "sha256:echo"
    provider = "cpu"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.ones((len(texts), 2), dtype=np.float32)


def test_off_unless_the_token_is_set() -> None:
    model = Echo()
    assert with_injected_faults(model, {}) is model
    assert with_injected_faults(model, {FAIL_TOKEN_ENV: ""}) is model


def test_fails_every_batch_holding_the_token() -> None:
    model = with_injected_faults(Echo(), {FAIL_TOKEN_ENV: "POISON"})
    assert isinstance(model, FailingModel)
    assert (model.name, model.content_hash, model.provider) == ("echo", "sha256:echo", "cpu")
    assert model.encode(["fine", "also fine"]).shape == (2, 2)
    for _ in range(5):
        with pytest.raises(InjectedModelFault):
            model.encode(["fine", "a POISON text"])


def test_fails_only_the_first_n_times() -> None:
    model = with_injected_faults(Echo(), {FAIL_TOKEN_ENV: "POISON", FAIL_TIMES_ENV: "2"})
    for _ in range(2):
        with pytest.raises(InjectedModelFault):
            model.encode(["POISON"])
    assert model.encode(["POISON"]).shape == (1, 2)


def test_a_bad_count_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match=FAIL_TIMES_ENV):
        with_injected_faults(Echo(), {FAIL_TOKEN_ENV: "POISON", FAIL_TIMES_ENV: "twice"})
