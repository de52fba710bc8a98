"""pipeline/config.py: one YAML file + SLMSTREAM_* env vars → validated Settings, or a readable ConfigError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
REPO_CONFIG = REPO / "config" / "slmstream.yaml"


# No SLMSTREAM_* variable of the outer environment leaks in: clean_env (tests/conftest.py) runs for every test.


@pytest.fixture
def repo_config(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(REPO_CONFIG))
    return REPO_CONFIG


def repo_doc() -> dict[str, Any]:
    return yaml.safe_load(REPO_CONFIG.read_text())


def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, doc: Any, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(path))
    return path


def config_error(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    return str(info.value)


# ---- the repo file -----------------------------------------------------------------------------------------
def test_repo_config_loads_with_its_values(repo_config: Path) -> None:
    s = load_settings()
    assert s.broker == "kafka://127.0.0.1:9092"
    assert s.batching.budget_ms == 250.0
    assert s.batching.max_batch == 32
    assert s.batching.late_policy == "defer"
    assert s.batching.queue_limit == 2048
    assert s.input.max_depth == 16
    assert s.model.encoder == "minilm-l6-int8"
    assert s.classifier.min_confidence == pytest.approx(0.35)
    assert list(s.labels) == [
        "billing",
        "shipping",
        "technical_issue",
        "account_access",
        "refund_return",
        "product_question",
        "praise",
    ]
    assert len(s.labels["billing"].examples) == 4


def test_env_var_overrides_a_nested_key(repo_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMSTREAM_BATCHING__BUDGET_MS", "150")
    s = load_settings()
    assert s.batching.budget_ms == 150.0
    # The rest of the section still comes from the file.
    assert s.batching.max_batch == 32
    assert s.batching.late_policy == "defer"


def test_env_var_merges_with_yaml_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    doc["batching"] = {"max_batch": 7, "queue_limit": 100, "late_policy": "process"}
    write_config(tmp_path, monkeypatch, doc)
    monkeypatch.setenv("SLMSTREAM_BATCHING__BUDGET_MS", "150")
    monkeypatch.setenv("SLMSTREAM_TOPICS__DLQ", "my.dlq")
    s = load_settings()
    assert (s.batching.budget_ms, s.batching.max_batch, s.batching.queue_limit) == (150.0, 7, 100)
    assert s.batching.late_policy == "process"
    assert s.topics.dlq == "my.dlq"
    assert s.topics.events == "events"


def test_init_overrides_win_over_env_and_yaml(repo_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMSTREAM_APP_ID", "from-env")
    assert load_settings().app_id == "from-env"
    assert load_settings(app_id="from-code").app_id == "from-code"


# ---- typos and bad values ----------------------------------------------------------------------------------
def test_typo_in_yaml_key_names_key_and_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    doc["batching"]["budget_msx"] = doc["batching"].pop("budget_ms")
    write_config(tmp_path, monkeypatch, doc)
    msg = config_error()
    assert "batching.budget_msx" in msg
    assert "SLMSTREAM_BATCHING__BUDGET_MSX" in msg
    assert "Extra inputs are not permitted" in msg


def test_typo_in_top_level_yaml_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    doc["batchin"] = doc.pop("batching")
    write_config(tmp_path, monkeypatch, doc)
    msg = config_error()
    assert "batchin" in msg
    assert "SLMSTREAM_BATCHIN" in msg


def test_typo_in_nested_env_var_is_rejected(repo_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMSTREAM_BATCHING__BUGDET_MS", "150")
    msg = config_error()
    assert "batching.bugdet_ms" in msg
    assert "SLMSTREAM_BATCHING__BUGDET_MS" in msg


@pytest.mark.parametrize(
    ("env", "value", "setting", "allowed"),
    [
        ("SLMSTREAM_BATCHING__LATE_POLICY", "sometimes", "batching.late_policy", "'process', 'degrade' or 'defer'"),
        ("SLMSTREAM_BATCHING__BUDGET_MS", "-1", "batching.budget_ms", "greater than 0"),
        ("SLMSTREAM_BROKER", "http://x", "broker", "kafka://"),
        ("SLMSTREAM_BROKER", "kafka://nohost", "broker", "host:port"),
        ("SLMSTREAM_TOPICS__PARTITIONS", "0", "topics.partitions", "greater than or equal to 1"),
        ("SLMSTREAM_MODEL__PROVIDER", "tpu", "model.provider", "'auto', 'cpu', 'cuda' or 'tensorrt'"),
    ],
)
def test_bad_value_names_setting_and_what_is_allowed(
    repo_config: Path, monkeypatch: pytest.MonkeyPatch, env: str, value: str, setting: str, allowed: str
) -> None:
    monkeypatch.setenv(env, value)
    msg = config_error()
    line = next(ln for ln in msg.splitlines() if ln.strip().startswith(f"- {setting}:"))
    assert allowed in line
    assert repr(value) in line  # the bad value is shown
    assert env in line


def test_queue_limit_below_max_batch_is_rejected(repo_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMSTREAM_BATCHING__MAX_BATCH", "16")
    monkeypatch.setenv("SLMSTREAM_BATCHING__QUEUE_LIMIT", "8")
    msg = config_error()
    assert "queue_limit (8) must be >= max_batch (16)" in msg
    assert "batching" in msg


def test_queue_limit_equal_to_max_batch_is_fine(repo_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMSTREAM_BATCHING__MAX_BATCH", "16")
    monkeypatch.setenv("SLMSTREAM_BATCHING__QUEUE_LIMIT", "16")
    assert load_settings().batching.queue_limit == 16


def test_label_named_unknown_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    doc["labels"]["unknown"] = {"description": "anything else"}
    write_config(tmp_path, monkeypatch, doc)
    msg = config_error()
    assert "- labels:" in msg
    assert "'unknown' is reserved" in msg


def test_label_name_with_spaces_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    doc["labels"]["bad name"] = {"description": "x"}
    write_config(tmp_path, monkeypatch, doc)
    assert "label name 'bad name'" in config_error()


def test_fewer_than_two_labels_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    doc["labels"] = {"billing": doc["labels"]["billing"]}
    write_config(tmp_path, monkeypatch, doc)
    msg = config_error()
    assert "- labels:" in msg
    assert "at least 2" in msg


def test_label_without_description_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    doc["labels"]["billing"] = {"examples": ["x"]}
    write_config(tmp_path, monkeypatch, doc)
    assert "labels.billing.description" in config_error()


# ---- the file itself ---------------------------------------------------------------------------------------
def test_missing_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(missing))
    msg = config_error()
    assert str(missing) in msg
    assert "does not exist" in msg


def test_invalid_yaml_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("labels:\n  a: {description: x\nbroker: [unclosed\n")
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(path))
    msg = config_error()
    assert str(path) in msg
    assert "not valid YAML" in msg


def test_empty_yaml_file_reports_missing_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(path))
    msg = config_error()
    assert "- labels: Field required" in msg


def test_yaml_top_level_not_a_mapping_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- billing\n- shipping\n")
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(path))
    assert str(path) in config_error()


def test_config_path_is_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(tmp_path))
    assert str(tmp_path) in config_error()


# ---- taxonomy ----------------------------------------------------------------------------------------------
def test_taxonomy_is_a_content_hash_that_follows_the_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    write_config(tmp_path, monkeypatch, doc, "a.yaml")
    first = load_settings().taxonomy
    assert first.startswith("sha256:")
    assert len(first) == len("sha256:") + 12
    assert load_settings().taxonomy == first  # deterministic

    doc["labels"]["billing"]["description"] += " Also invoices."
    write_config(tmp_path, monkeypatch, doc, "b.yaml")
    changed = load_settings().taxonomy
    assert changed.startswith("sha256:")
    assert changed != first

    doc = repo_doc()
    doc["labels"]["praise"]["examples"].append("You rock.")
    write_config(tmp_path, monkeypatch, doc, "c.yaml")
    assert load_settings().taxonomy not in (first, changed)


def test_taxonomy_ignores_non_label_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    write_config(tmp_path, monkeypatch, doc, "a.yaml")
    first = load_settings().taxonomy
    monkeypatch.setenv("SLMSTREAM_BATCHING__BUDGET_MS", "99")
    assert load_settings().taxonomy == first


def test_taxonomy_version_wins_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    doc["taxonomy_version"] = "support-v7"
    write_config(tmp_path, monkeypatch, doc)
    s = load_settings()
    assert s.taxonomy_version == "support-v7"
    assert s.taxonomy == "support-v7"


def test_settings_without_yaml_use_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings() itself (not load_settings) tolerates a missing file: the code defaults apply.
    monkeypatch.setenv("SLMSTREAM_CONFIG", str(tmp_path / "none.yaml"))
    s = Settings(labels={"a": {"description": "x"}, "b": {"description": "y"}})
    assert s.batching.budget_ms == 250.0
    assert s.topics.deferred == "events.deferred"
    assert s.web_is_loopback


# ---- taxonomy size limits ----------------------------------------------------------------------------------
def test_at_most_256_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    doc["labels"] = {f"label_{i}": {"description": f"topic number {i}"} for i in range(256)}
    write_config(tmp_path, monkeypatch, doc, "ok.yaml")
    assert len(load_settings().labels) == 256

    doc["labels"]["label_256"] = {"description": "one too many"}
    write_config(tmp_path, monkeypatch, doc, "too-many.yaml")
    msg = config_error()
    assert "- labels:" in msg
    assert "257 labels; at most 256 are allowed" in msg


def test_label_description_at_most_1000_chars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    doc["labels"]["billing"]["description"] = "x" * 1000
    write_config(tmp_path, monkeypatch, doc, "ok.yaml")
    assert len(load_settings().labels["billing"].description) == 1000

    doc["labels"]["billing"]["description"] = "y" * 1001
    write_config(tmp_path, monkeypatch, doc, "long.yaml")
    msg = config_error()
    line = next(ln for ln in msg.splitlines() if ln.strip().startswith("- labels.billing.description:"))
    assert "at most 1000 characters" in line
    assert "SLMSTREAM_LABELS__BILLING__DESCRIPTION" in line
    assert "y" * 200 not in msg  # the shown value is cut short


def test_at_most_64_examples_per_label(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = repo_doc()
    doc["labels"]["billing"]["examples"] = [f"example {i}" for i in range(64)]
    write_config(tmp_path, monkeypatch, doc, "ok.yaml")
    assert len(load_settings().labels["billing"].examples) == 64

    doc["labels"]["billing"]["examples"].append("example 64")
    write_config(tmp_path, monkeypatch, doc, "many.yaml")
    msg = config_error()
    line = next(ln for ln in msg.splitlines() if ln.strip().startswith("- labels.billing.examples:"))
    assert "at most 64 items" in line


@pytest.mark.parametrize(("example", "expected"), [("z" * 1001, "at most 1000 characters"), ("", "at least 1")])
def test_each_example_is_bounded_and_not_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example: str, expected: str
) -> None:
    doc = repo_doc()
    doc["labels"]["shipping"]["examples"][2] = example
    write_config(tmp_path, monkeypatch, doc)
    msg = config_error()
    line = next(ln for ln in msg.splitlines() if ln.strip().startswith("- labels.shipping.examples.2:"))
    assert expected in line


# ---- sections ----------------------------------------------------------------------------------------------
def test_section_rule_error_points_to_the_section(repo_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMSTREAM_BATCHING__MAX_BATCH", "16")
    monkeypatch.setenv("SLMSTREAM_BATCHING__QUEUE_LIMIT", "8")
    line = next(ln for ln in config_error().splitlines() if ln.strip().startswith("- batching:"))
    assert "[YAML section `batching` or env SLMSTREAM_BATCHING__<KEY>]" in line


def test_kafka_and_web_sections_are_known_env_names(repo_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMSTREAM_KAFKA__PROTOCOL", "PLAINTEXT")
    monkeypatch.setenv("SLMSTREAM_WEB__PORT", "7000")
    s = load_settings()
    assert (s.kafka.protocol, s.web.port) == ("PLAINTEXT", 7000)
    monkeypatch.setenv("SLMSTREAM_KAFKAA__PROTOCOL", "SSL")
    msg = config_error()
    assert "unknown setting SLMSTREAM_KAFKAA__PROTOCOL" in msg
    assert "SLMSTREAM_KAFKA" in msg


def test_repo_config_loads_with_security_defaults(repo_config: Path) -> None:
    s = load_settings()
    assert s.kafka.protocol == "PLAINTEXT"
    assert s.web.host == "127.0.0.1"
    assert s.web.token is None
