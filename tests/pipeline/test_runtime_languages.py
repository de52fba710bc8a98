"""pipeline/runtime.py: which classifier the worker builds for `model.language_id` and `model.multilingual`
(the real MiniLM and, where built, the multilingual encoder: `make models`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from pipeline.config import Settings
from pipeline.model.catalog import MULTILINGUAL
from pipeline.model.classifier import LabelClassifier
from pipeline.model.identity import IDENTITY
from pipeline.model.router import RoutedClassifier
from pipeline.runtime import generator_languages, load_routed

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "models"
PRIMARY = "minilm-l6-int8"
needs_models = pytest.mark.skipif(
    not all((CACHE / m / "manifest.json").exists() for m in (PRIMARY, MULTILINGUAL)),
    reason=f"{PRIMARY} or {MULTILINGUAL} is not built in {CACHE}: run `slmstream models build` first",
)
pytestmark = pytest.mark.usefixtures("clean_env")  # no SLMSTREAM_* of the shell; the repository's config
GERMAN = "Meine Kreditkarte wurde zweimal belastet, bitte erstatten Sie den Betrag."


def settings(cache: Path, **model: object) -> Settings:
    return Settings(model={"encoder": PRIMARY, "cache_dir": str(cache), **model})


@needs_models
def test_routed_to_the_multilingual_encoder_when_it_is_built() -> None:
    clf = load_routed(settings(CACHE), PRIMARY, multilingual=True)
    assert isinstance(clf, RoutedClassifier)
    assert [r.classifier.info.name for r in clf.routes] == [PRIMARY, MULTILINGUAL]
    (result,) = clf.classify([GERMAN])
    assert (result.lang, result.lang_supported) == ("de", True)
    assert result.model is not None and result.model.name == MULTILINGUAL


@needs_models
def test_without_the_multilingual_model_everything_goes_to_the_encoder_and_a_line_says_so(tmp_path: Path) -> None:
    (tmp_path / PRIMARY).symlink_to(CACHE / PRIMARY)  # a cache with MiniLM only
    with structlog.testing.capture_logs() as logs:
        clf = load_routed(settings(tmp_path), PRIMARY, multilingual=True)
    assert isinstance(clf, RoutedClassifier)
    assert [r.classifier.info.name for r in clf.routes] == [PRIMARY]
    (missing,) = [e for e in logs if e["event"] == "multilingual_encoder_missing"]
    assert missing["model"] == MULTILINGUAL and f"slmstream models build {MULTILINGUAL}" in missing["effect"]
    (result,) = clf.classify([GERMAN])
    assert (result.lang, result.lang_supported) == ("de", False)  # classified anyway, and says so


@needs_models
def test_off_settings_give_the_plain_classifier() -> None:
    assert isinstance(load_routed(settings(CACHE, language_id=False), PRIMARY, multilingual=True), LabelClassifier)
    routed = load_routed(settings(CACHE, multilingual=""), PRIMARY, multilingual=True)
    assert isinstance(routed, RoutedClassifier) and len(routed.routes) == 1  # language ID, one encoder
    fallback = load_routed(settings(CACHE), PRIMARY, multilingual=False)  # the degrade fallback's form
    assert isinstance(fallback, RoutedClassifier) and len(fallback.routes) == 1


def test_the_identity_model_is_not_routed(tmp_path: Path) -> None:
    s = Settings(model={"encoder": IDENTITY, "cache_dir": str(tmp_path)})
    assert not isinstance(load_routed(s, IDENTITY, multilingual=True), RoutedClassifier)


def test_generator_languages_from_the_setting_or_the_catalog() -> None:
    assert generator_languages(Settings()) == frozenset({"en"})  # smollm2-135m-int8
    assert generator_languages(Settings(summaries={"generator_languages": ["en", "de"]})) == {"en", "de"}
    assert generator_languages(Settings(summaries={"generator": "my-qwen2"})) is None  # imported: any
