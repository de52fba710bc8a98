"""The pure parts of `slmstream dlq replay`: decoding DLQ records, the --type filter, the replay headers, the
summary and the command line. The replay against a real broker is in tests/e2e/test_hostile_input.py."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.dlq import (
    REPLAYED_FROM_HEADER,
    DeadLetter,
    DlqError,
    ReplaySummary,
    decode_record,
    replay_dlq,
    replay_headers,
    selected,
    summary_table,
)
from pipeline.output.records import dlq_record
from schemas import DLQ_ERROR_TYPES, Origin

ORIGIN = Origin("events", 2, 17, key=b"\x00k\xff", headers=(("h", b"\xfe"), ("", None), ("é", b"")), timestamp_ms=5)


def record(doc: dict) -> bytes:
    return orjson.dumps(doc)


def good() -> dict:
    return orjson.loads(dlq_record("not_json", "not valid JSON", ORIGIN, b"\xff{"))


def test_decodes_what_dlq_record_writes() -> None:
    letter = decode_record(dlq_record("not_json", "not valid JSON", ORIGIN, b"\xff{"))
    assert letter == DeadLetter("not_json", b"\x00k\xff", b"\xff{", (("h", b"\xfe"), ("", None), ("é", b"")))


@pytest.mark.parametrize("error_type", DLQ_ERROR_TYPES)
def test_every_error_type_decodes(error_type: str) -> None:
    letter = decode_record(dlq_record(error_type, "m", Origin("t", 0, 0), None))
    assert letter == DeadLetter(error_type, None, None, ())


@settings(max_examples=200, deadline=None)
@given(
    key=st.none() | st.binary(max_size=40),
    value=st.none() | st.binary(max_size=200),
    headers=st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=20)), max_size=5),
    error_type=st.sampled_from(DLQ_ERROR_TYPES),
)
def test_round_trip(key: bytes | None, value: bytes | None, headers: list, error_type: str) -> None:
    origin = Origin("events", 1, 2, key=key, headers=tuple(headers))
    letter = decode_record(dlq_record(error_type, "why", origin, value))
    assert letter == DeadLetter(error_type, key, value, tuple(headers))


def _without(path: tuple[str, ...]) -> dict:
    doc = good()
    target = doc
    for p in path[:-1]:
        target = target[p]
    del target[path[-1]]
    return doc


def _with(path: tuple[str, ...], value: object) -> dict:
    doc = good()
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"a string"',
        b"{}",
        b'{"text":"an input event, not a DLQ record"}',
        record(_without(("error",))),
        record(_without(("original",))),
        record(_without(("error", "type"))),
        record(_without(("original", "value_b64"))),
        record(_without(("original", "key"))),
        record(_without(("original", "headers"))),
        record(_with(("error",), "not_json")),
        record(_with(("original",), [])),
        record(_with(("error", "type"), "no_such_type")),
        record(_with(("error", "type"), 5)),
        record(_with(("original", "value_b64"), "not base64!")),
        record(_with(("original", "value_b64"), "YQ")),  # bad padding
        record(_with(("original", "value_b64"), 5)),
        record(_with(("original", "key"), ["a"])),
        record(_with(("original", "headers"), "h")),
        record(_with(("original", "headers"), [["h"]])),
        record(_with(("original", "headers"), [["h", "dg==", "x"]])),
        record(_with(("original", "headers"), [[5, "dg=="]])),
        record(_with(("original", "headers"), [["h", 5]])),
        record(_with(("original", "headers"), [["h", "***"]])),
        record(_with(("original", "headers"), [{"h": "dg=="}])),
    ],
)
def test_not_a_dlq_record(raw: bytes | None) -> None:
    assert decode_record(raw) is None


def test_extra_fields_are_fine() -> None:
    doc = good()
    doc["extra"] = 1
    doc["original"]["partition_count"] = 4
    assert decode_record(record(doc)) is not None


def test_selected() -> None:
    letter = DeadLetter("not_json", None, b"x", ())
    assert selected(letter, frozenset())
    assert selected(letter, frozenset({"not_json", "too_deep"}))
    assert not selected(letter, frozenset({"too_deep"}))


def test_replay_headers_keep_the_originals_and_add_the_source() -> None:
    letter = DeadLetter("x", None, None, (("a", None), ("a", b"1"), (REPLAYED_FROM_HEADER, b"events.dlq:0:1")))
    assert replay_headers(letter, "events.dlq:3:42") == [
        ("a", None),
        ("a", b"1"),
        (REPLAYED_FROM_HEADER, b"events.dlq:0:1"),  # an earlier replay stays: the chain is kept
        (REPLAYED_FROM_HEADER, b"events.dlq:3:42"),
    ]


def render(summary: ReplaySummary, dry_run: bool) -> str:
    console = Console(width=120, record=True)
    console.print(summary_table(summary, dry_run))
    return console.export_text()


def test_summary_table() -> None:
    s = ReplaySummary(Counter({"not_json": 3, "too_deep": 1}), Counter({"wrong_type": 2}), invalid=4, read=10)
    text = render(s, dry_run=False)
    assert "10 records read" in text and "replayed" in text
    rows = {line.split()[1]: line.split()[2:] for line in text.splitlines() if line.startswith("│")}
    assert rows["not_json"] == ["│", "3", "│", "0", "│"]
    assert rows["wrong_type"] == ["│", "0", "│", "2", "│"]
    assert rows["total"] == ["│", "4", "│", "2", "│"]
    assert "not a DLQ record" in text and "bad_timestamp" not in text
    assert "would replay" in render(s, dry_run=True)


def test_same_topic_in_and_out_is_refused() -> None:
    with pytest.raises(DlqError, match="both"):
        asyncio.run(replay_dlq("127.0.0.1:1", "events.dlq", "events.dlq"))


runner = CliRunner()


def test_cli_is_registered(cli_options) -> None:
    result = runner.invoke(app, ["dlq", "replay", "--help"])
    assert result.exit_code == 0, result.output
    assert {"--broker", "--from-topic", "--to-topic", "--type", "--dry-run", "--limit"} <= cli_options("dlq", "replay")


def test_cli_refuses_an_unknown_type() -> None:
    result = runner.invoke(app, ["dlq", "replay", "--type", "not_json", "--type", "bogus"])
    assert result.exit_code == 2
    assert "bogus" in result.output


def test_cli_refuses_a_zero_limit() -> None:
    assert runner.invoke(app, ["dlq", "replay", "--limit", "0"]).exit_code == 2
