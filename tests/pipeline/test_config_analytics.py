"""The `summaries` and `alerts` sections: defaults, env overrides and messages that say what to fix."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_settings


def test_defaults_are_off_and_sane() -> None:
    s = load_settings()
    assert not s.summaries.enabled and not s.alerts.enabled
    assert (s.summaries.window_s, s.summaries.grace_s, s.summaries.budget_s) == (60, 5, 10)
    assert s.summaries.generator == "smollm2-135m-int8" and s.summaries.key == "key"
    assert s.topics.summaries == "events.summaries" and s.topics.alerts == "events.alerts"


def test_env_overrides(monkeypatch) -> None:
    monkeypatch.setenv("SLMSTREAM_SUMMARIES__ENABLED", "true")
    monkeypatch.setenv("SLMSTREAM_SUMMARIES__KEY", "attrs.ticket.id")
    monkeypatch.setenv("SLMSTREAM_SUMMARIES__WINDOW_S", "10")
    monkeypatch.setenv("SLMSTREAM_ALERTS__Z", "off")
    s = load_settings()
    assert s.summaries.enabled and s.summaries.key == "attrs.ticket.id" and s.summaries.window_s == 10
    assert s.alerts.z is None and s.alerts.ratio == 3.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLMSTREAM_SUMMARIES__KEY": "customer"}, "use `key`, `source` or `attrs.<path>`"),
        ({"SLMSTREAM_SUMMARIES__KEY": "attrs."}, "summaries.key"),
        ({"SLMSTREAM_SUMMARIES__WINDOW_S": "0"}, "summaries.window_s"),
        ({"SLMSTREAM_SUMMARIES__MAX_EVENTS": "9000"}, "max_events (9000) must be <= max_events_per_window"),
        ({"SLMSTREAM_SUMMARIES__MAX_HELD": "100"}, "max_held (100) must be >= 2 x max_events_per_window"),
        ({"SLMSTREAM_ALERTS__RATIO": "off", "SLMSTREAM_ALERTS__Z": "none"}, "set alerts.ratio, alerts.z or both"),
        ({"SLMSTREAM_ALERTS__RATIO": "0.5"}, "alerts.ratio"),
        ({"SLMSTREAM_ALERTS__MIN_BASELINE_WINDOWS": "20"}, "min_baseline_windows (20) must be <= baseline_windows"),
        ({"SLMSTREAM_SUMMARIES__WINDOWS": "5"}, "summaries.windows"),  # a typo is an error, not ignored
    ],
)
def test_bad_values_name_the_setting(monkeypatch, env: dict[str, str], message: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert message in str(exc.value)
