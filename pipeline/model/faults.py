"""TEST-ONLY fault injection: make the model raise inside inference, so the end-to-end tests can check the
retry-then-DLQ path of a real worker (tests/e2e/test_faults.py). Off unless the worker starts with

    SLMTEST_MODEL_FAIL_TOKEN=T   a model call raises `InjectedModelFault` when one of its texts contains T
    SLMTEST_MODEL_FAIL_TIMES=N   ... only the first N such calls (default: every one)
    SLMTEST_MODEL_SLOW_TOKEN=T   a model call sleeps SLMTEST_MODEL_SLOW_S seconds (default 2) on the model thread
                                 when one of its texts contains T: a batch that stays in flight for the
                                 graceful-stop test (tests/e2e/test_lifecycle.py)

Not a setting (hence not `SLMSTREAM_*`): never set these in production.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import structlog

from pipeline.model.base import Encoder, ModelError

FAIL_TOKEN_ENV = "SLMTEST_MODEL_FAIL_TOKEN"
FAIL_TIMES_ENV = "SLMTEST_MODEL_FAIL_TIMES"
SLOW_TOKEN_ENV = "SLMTEST_MODEL_SLOW_TOKEN"
SLOW_S_ENV = "SLMTEST_MODEL_SLOW_S"

log = structlog.get_logger(__name__)


class InjectedModelFault(RuntimeError):
    """Raised by `FailingModel`: stands for any exception inside inference."""


class FailingModel:
    """An `Encoder` whose `encode` raises for texts containing `token` (the first `times` calls; None: all)."""

    def __init__(self, model: Encoder, token: str, times: int | None = None) -> None:
        self.model, self.token, self.times = model, token, times
        self.failed = 0
        self.name = model.name
        self.content_hash = model.content_hash

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if (self.times is None or self.failed < self.times) and any(self.token in t for t in texts):
            self.failed += 1
            raise InjectedModelFault(f"injected model fault #{self.failed} ({FAIL_TOKEN_ENV} is set)")
        return self.model.encode(texts)

    def __getattr__(self, name: str) -> Any:  # anything else a backend offers (provider, ...)
        return getattr(self.model, name)


class SlowModel:
    """An `Encoder` whose `encode` first sleeps `seconds` for texts containing `token`."""

    def __init__(self, model: Encoder, token: str, seconds: float) -> None:
        self.model, self.token, self.seconds = model, token, seconds
        self.name = model.name
        self.content_hash = model.content_hash

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if any(self.token in t for t in texts):
            time.sleep(self.seconds)  # on the model thread, like a slow inference
        return self.model.encode(texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def with_injected_faults(model: Encoder, env: Mapping[str, str] = os.environ) -> Encoder:
    """`model` itself, or a `FailingModel`/`SlowModel` around it when SLMTEST_MODEL_FAIL_TOKEN/_SLOW_TOKEN is set."""
    slow = env.get(SLOW_TOKEN_ENV)
    if slow:
        raw_s = env.get(SLOW_S_ENV, "2")
        try:
            seconds = float(raw_s)
        except ValueError:
            raise ModelError(f"{SLOW_S_ENV}={raw_s!r} must be a number of seconds") from None
        log.warning("test_slow_model_enabled", model=model.name, env=SLOW_TOKEN_ENV, seconds=seconds)
        model = SlowModel(model, slow, seconds)
    token = env.get(FAIL_TOKEN_ENV)
    if not token:
        return model
    raw_times = env.get(FAIL_TIMES_ENV)
    try:
        times = None if raw_times is None else int(raw_times)
    except ValueError:
        raise ModelError(f"{FAIL_TIMES_ENV}={raw_times!r} must be a whole number (or unset: fail every time)") from None
    log.warning("test_fault_injection_enabled", model=model.name, env=FAIL_TOKEN_ENV, times=times)
    return FailingModel(model, token, times)
