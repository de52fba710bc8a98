"""`slmstream label`: the records it would send (shape checked first, keyed by label) and its arguments; the
send itself is replaced (the e2e test sends feedback through Kafka)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from pipeline.cli import app, label
from pipeline.config import InputSettings
from pipeline.ingest.validate import Rejection

CONFIGURED = ["billing", "shipping"]
LIMITS = InputSettings()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[tuple[bytes, bytes]], str]]:
    calls: list[tuple[list[tuple[bytes, bytes]], str]] = []

    async def publish(records: Any, topic: str, *args: Any) -> None:
        calls.append((list(records), topic))

    monkeypatch.setattr(label, "publish", publish)
    return calls


def test_checked_keys_by_label_and_lets_the_workers_judge_labels_added_later() -> None:
    value = orjson.dumps({"id": "e1", "label": "fraud"})  # perhaps added through feedback: the worker decides
    assert label.checked(value, CONFIGURED, LIMITS) == (b"fraud", value)
    refused = label.checked(orjson.dumps({"label": "billing", "description": "again"}), CONFIGURED, LIMITS)
    assert isinstance(refused, Rejection) and refused.type == "label_exists"
    assert isinstance(label.checked(b"{", CONFIGURED, LIMITS), Rejection)


def test_records_from_lines_names_the_bad_lines() -> None:
    lines = [orjson.dumps({"text": "charged twice", "label": "billing"}), b"", b"nope", orjson.dumps({"id": 1})]
    records, problems = label.records_from_lines(lines, CONFIGURED, LIMITS)
    assert records == [(b"billing", lines[0])]
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 4"]


def test_label_an_event(sent: list) -> None:
    result = CliRunner().invoke(app, ["label", "e-42", "billing", "--by", "ana"])
    assert result.exit_code == 0, result.output
    ((records, topic),) = sent
    assert topic == "events.feedback"
    assert records == [(b"billing", orjson.dumps({"label": "billing", "id": "e-42", "by": "ana"}))]
    assert "sent 1 feedback record to events.feedback" in result.output


def test_a_new_label(sent: list) -> None:
    result = CliRunner().invoke(app, ["label", "--new", "fraud", "--description", "Card used without consent."])
    assert result.exit_code == 0, result.output
    ((records, _),) = sent
    assert orjson.loads(records[0][1]) == {"label": "fraud", "description": "Card used without consent."}


def test_a_file(sent: list, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(b'{"text": "charged twice", "label": "billing"}\n\n{"id": "e1", "label": "shipping"}\n')
    result = CliRunner().invoke(app, ["label", "--file", str(good)])
    assert result.exit_code == 0, result.output
    assert [k for k, _ in sent[0][0]] == [b"billing", b"shipping"]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "charged twice", "label": "billing"}\n{"text": "x"}\n')
    result = CliRunner().invoke(app, ["label", "--file", str(bad)])
    assert result.exit_code == 1
    assert "nothing sent" in result.output and "line 2: missing_field" in result.output
    assert len(sent) == 1


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["e1"],
        ["e1", "billing", "--new", "fraud", "--description", "d"],
        ["--new", "fraud"],
        ["--description", "d"],
    ],
)
def test_wrong_arguments_exit_2(sent: list, args: list[str]) -> None:
    result = CliRunner().invoke(app, ["label", *args])
    assert result.exit_code == 2, result.output
    assert sent == []


def test_a_bad_label_name_is_refused_before_sending(sent: list) -> None:
    result = CliRunner().invoke(app, ["label", "e1", "not a label!"])
    assert result.exit_code == 1 and "wrong_type" in result.output
    assert sent == []
