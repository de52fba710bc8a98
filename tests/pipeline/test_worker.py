"""pipeline/worker.py assembles the worker from settings: nothing connects, nothing starts here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pipeline
from pipeline import worker
from pipeline.config import Settings
from pipeline.ingest.reader import EventReader, classify_group
from pipeline.model.base import ModelError
from pipeline.model.identity import IDENTITY
from pipeline.runtime import Runtime

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "slmstream.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SLMSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(REPO_CONFIG))


def settings(tmp_path: Path, **sections: dict) -> Settings:
    # The identity model has no files: the preflight passes with an empty model cache.
    return Settings(model={"encoder": IDENTITY, "cache_dir": str(tmp_path / "models")}, **sections)


def test_build_worker_registers_the_classify_reader_pages_and_runtime(tmp_path: Path) -> None:
    app = worker.build_worker(settings(tmp_path))
    assert sorted(app.agents) == []  # the classify path is a reader, not a per-event agent
    services = app._extra_services  # noqa: SLF001  faust-streaming 0.15.3: what app.service() added
    runtime = app.runtime
    readers = [s for s in services if isinstance(s, EventReader)]
    assert len(readers) == 1 and services.index(runtime) < services.index(readers[0])  # reader stops first
    assert readers[0].runtime is runtime and classify_group(app.settings.app_id) == f"{app.settings.app_id}.classify"
    assert isinstance(runtime, Runtime)
    assert runtime.topics.events.get_topic_name() == app.settings.topics.events
    assert not runtime.is_ready()  # nothing loaded before the app starts
    routes = {route.resource.canonical for route in app.web.web_app.router.routes()}
    assert {"/health", "/metrics", "/dashboard", "/api/live"} <= routes


def test_the_analyze_agent_only_with_summaries_or_alerts(tmp_path: Path) -> None:
    app = worker.build_worker(settings(tmp_path, alerts={"enabled": True}))
    assert sorted(app.agents) == ["analyze", "merge_stats", "repartition"]
    t = app.settings.topics
    assert [x.get_topic_name() for x in app.runtime.topics.analytics] == [
        t.enriched_by_key,
        t.stats_partials,
        t.summaries,
        t.stats,
        t.alerts,
    ]
    assert app.agents["analyze"].channel.get_topic_name() == t.enriched_by_key


def test_a_missing_model_stops_the_build_before_any_app(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="slmstream models build"):
        worker.build_worker(Settings(model={"cache_dir": str(tmp_path / "empty")}))


def test_pipeline_app_exits_2_with_the_setting_named(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("SLMSTREAM_BATCHING__BUDGET_MS", "-5")
    monkeypatch.setattr(pipeline, "_app", None)
    with pytest.raises(SystemExit) as info:
        pipeline.app  # noqa: B018  the attribute access builds the worker
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("slmstream: ") and "SLMSTREAM_BATCHING__BUDGET_MS" in err


def test_pipeline_app_is_built_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMSTREAM_MODEL__ENCODER", IDENTITY)
    monkeypatch.setenv("SLMSTREAM_MODEL__CACHE_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(pipeline, "_app", None)
    first = pipeline.app
    assert pipeline.app is first
