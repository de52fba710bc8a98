"""The pure parts of `slmstream dlq replay`: decoding DLQ records, the --type filter, the replay headers, the
summary and the command line; values cut in the DLQ record, checked against their source record; the replay
loop on fake clients. The replay against a real broker is in tests/e2e/test_hostile_input.py and
tests/e2e/test_dlq_replay_e2e.py."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from pipeline.cli import app, dlq
from pipeline.cli.dlq import (
    REPLAYED_FROM_HEADER,
    CutValue,
    DeadLetter,
    DlqError,
    Missing,
    Refusal,
    Refused,
    ReplaySummary,
    SourceRecord,
    decode_record,
    replay_dlq,
    replay_headers,
    selected,
    summary_table,
    whole_letter,
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


# ---- values cut in the DLQ record ---------------------------------------------------------------------------
CUT_AT = 8  # dlq_record's max_value_bytes here: small values stand for the 512 KiB limit
WHOLE = b'{"text": "' + b"x" * 40 + b'"}'
WHOLE_SHA = hashlib.sha256(WHOLE).hexdigest()
CUT = CutValue("events", 2, 17, WHOLE_SHA, len(WHOLE))


def cut_doc() -> dict:
    return orjson.loads(dlq_record("too_large", "too big", ORIGIN, WHOLE, max_value_bytes=CUT_AT))


def test_a_cut_value_decodes_with_where_the_whole_message_is() -> None:
    letter = decode_record(record(cut_doc()))
    assert letter is not None and letter.value == WHOLE[:CUT_AT]
    assert letter.cut == CUT and letter.cut.ref == "events:2:17"


def test_a_value_under_the_limit_is_not_cut() -> None:
    letter = decode_record(dlq_record("too_large", "m", ORIGIN, WHOLE[:CUT_AT], max_value_bytes=CUT_AT))
    assert letter is not None and letter.cut is None and letter.value == WHOLE[:CUT_AT]


def _cut_with(key: str, value: object) -> bytes:
    doc = cut_doc()
    if value is ...:
        del doc["original"][key]
    else:
        doc["original"][key] = value
    return record(doc)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("value_truncated", "yes"),
        ("value_truncated", 1),
        ("value_sha256", ...),
        ("value_sha256", "abc"),
        ("value_sha256", WHOLE_SHA.upper()),
        ("value_sha256", None),
        ("topic", ""),
        ("topic", 5),
        ("partition", True),
        ("partition", -1),
        ("partition", "2"),
        ("offset", -1),
        ("offset", 1.5),
        ("offset", ...),
        ("value_bytes", "big"),
    ],
)
def test_a_cut_value_without_a_usable_source_is_not_a_dlq_record(key: str, value: object) -> None:
    """Never replayable whole, so never replayed: counted with the records that are not DLQ records."""
    assert decode_record(_cut_with(key, value)) is None


def test_value_truncated_false_is_an_ordinary_record() -> None:
    doc = good()
    doc["original"]["value_truncated"] = False
    assert decode_record(record(doc)) == decode_record(record(good()))


def cut_letter() -> DeadLetter:
    letter = decode_record(record(cut_doc()))
    assert letter is not None
    return letter


def test_the_source_record_is_replayed_whole_with_its_key_and_headers() -> None:
    found = SourceRecord(17, b"whole-key", WHOLE, (("h", b"1"),))
    assert whole_letter(cut_letter(), found) == DeadLetter("too_large", b"whole-key", WHOLE, (("h", b"1"),))


def test_a_letter_that_is_not_cut_is_replayed_as_it_is() -> None:
    letter = DeadLetter("not_json", None, b"x", ())
    assert whole_letter(letter, Missing("never read")) is letter


@pytest.mark.parametrize(
    ("found", "says"),
    [
        (Missing("the partition starts at offset 40 now (retention)"), "gone from events:2:17: the partition starts"),
        (SourceRecord(19, None, WHOLE, ()), "gone from events:2:17: the partition goes on at offset 19"),
        (
            SourceRecord(17, None, WHOLE + b" ", ()),
            f"another message (SHA-256 {hashlib.sha256(WHOLE + b' ').hexdigest()[:16]}",
        ),
        (SourceRecord(17, None, WHOLE[:CUT_AT], ()), "is another message"),
        (SourceRecord(17, None, None, ()), "another message (a null value"),
    ],
)
def test_a_cut_value_is_refused_when_its_source_record_is_gone_or_another(found: Any, says: str) -> None:
    with pytest.raises(Refused) as info:
        whole_letter(cut_letter(), found)
    assert says in str(info.value)
    assert f"holds only the first {CUT_AT} bytes" in str(info.value)


def test_a_refusal_names_the_dlq_record() -> None:
    assert str(Refusal("events.dlq:0:3", "too_large", "why")) == "events.dlq:0:3 (too_large) not replayed: why"


# ---- the replay loop, on fake clients ------------------------------------------------------------------------
class FakeConsumer:
    """The DLQ topic, one partition, every record in one fetch."""

    def __init__(self, values: list[bytes]) -> None:
        self.records = [
            SimpleNamespace(topic="events.dlq", partition=0, offset=i, timestamp=0, value=v)
            for i, v in enumerate(values)
        ]
        self.fetched = False

    def __call__(self, **kwargs: Any) -> FakeConsumer:
        return self

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def topics(self) -> set[str]:
        return {"events.dlq"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, tps: list) -> None: ...

    async def seek_to_beginning(self, *tps: Any) -> None: ...

    async def end_offsets(self, tps: list) -> dict:
        return {tp: len(self.records) for tp in tps}

    async def getmany(self, *tps: Any, timeout_ms: int) -> dict:
        await asyncio.sleep(0)
        if self.fetched:
            return {}
        self.fetched = True
        return {tps[0]: self.records}


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list]] = []

    def __call__(self, **kwargs: Any) -> FakeProducer:
        return self

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list) -> asyncio.Future:
        self.sent.append((topic, key, value, headers))
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class FakeSource:
    """The source topic: the records at the offsets given, nothing anywhere else."""

    def __init__(self, at: dict[int, bytes]) -> None:
        self.at = at
        self.read_at: list[int] = []

    def __call__(self, bootstrap: str, client_kwargs: dict, wait_s: float) -> FakeSource:
        return self

    async def read(self, cut: CutValue) -> SourceRecord | Missing:
        self.read_at.append(cut.offset)
        if cut.offset in self.at:
            return SourceRecord(cut.offset, b"k", self.at[cut.offset], ())
        return Missing("the partition starts at offset 1000 now (retention)")

    async def stop(self) -> None: ...


def cut_record(offset: int, value: bytes, error_type: str = "too_large") -> bytes:
    return dlq_record(error_type, "m", Origin("events", 0, offset), value, max_value_bytes=CUT_AT)


def run_replay(monkeypatch: pytest.MonkeyPatch, dlq_values: list[bytes], source: dict[int, bytes], **kw: Any):
    producer, reader = FakeProducer(), FakeSource(source)
    monkeypatch.setattr(dlq, "AIOKafkaConsumer", FakeConsumer(dlq_values))
    monkeypatch.setattr(dlq, "AIOKafkaProducer", producer)
    monkeypatch.setattr(dlq, "SourceReader", reader)
    summary = asyncio.run(replay_dlq("fake:9092", "events.dlq", "events", idle_s=0.0, **kw))
    return summary, producer.sent, reader


def test_replay_sends_cut_values_whole_and_the_others_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    big, other_big = WHOLE, WHOLE + b"!"
    values = [
        cut_record(5, big),  # source record there and matching: sent whole
        dlq_record("not_json", "m", Origin("events", 0, 6), b"{bad"),  # not cut: sent as it is
        cut_record(7, big),  # source record gone: refused
        cut_record(8, other_big),  # source record there but another message: refused
        dlq_record("model_error", "m", Origin("events", 0, 9), b'{"text":"hi"}'),  # not cut: sent
    ]
    summary, sent, reader = run_replay(monkeypatch, values, {5: big, 8: big})
    assert [(value, key) for _, key, value, _ in sent] == [(big, b"k"), (b"{bad", None), (b'{"text":"hi"}', None)]
    assert [h[-1] for *_, h in sent] == [
        (REPLAYED_FROM_HEADER, b"events.dlq:0:0"),
        (REPLAYED_FROM_HEADER, b"events.dlq:0:1"),
        (REPLAYED_FROM_HEADER, b"events.dlq:0:4"),
    ]
    assert summary.replayed == Counter({"too_large": 1, "not_json": 1, "model_error": 1})
    assert summary.from_source == 1 and summary.read == 5
    assert [(r.ref, r.error_type) for r in summary.refused] == [
        ("events.dlq:0:2", "too_large"),
        ("events.dlq:0:3", "too_large"),
    ]
    assert "gone from events:0:7" in summary.refused[0].reason and "another message" in summary.refused[1].reason
    assert reader.read_at == [5, 7, 8]


def test_a_dry_run_checks_the_source_and_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    summary, sent, reader = run_replay(
        monkeypatch, [cut_record(5, WHOLE), cut_record(7, WHOLE)], {5: WHOLE}, dry_run=True
    )
    assert sent == [] and summary.replayed == Counter({"too_large": 1}) and len(summary.refused) == 1
    assert reader.read_at == [5, 7]


def test_a_cut_value_of_an_unselected_type_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    summary, sent, reader = run_replay(monkeypatch, [cut_record(5, WHOLE)], {}, types=frozenset({"not_json"}))
    assert sent == [] and reader.read_at == [] and not summary.refused and summary.filtered == {"too_large": 1}


def test_refusals_are_printed_whole_and_exit_1_after_the_rest_is_sent(
    monkeypatch: pytest.MonkeyPatch, narrow_err: None
) -> None:
    refusal = Refusal("events.dlq:0:2", "too_large", "the DLQ record holds only the first 524288 bytes " + "x" * 200)

    async def fake_replay(*args: Any, **kwargs: Any) -> ReplaySummary:
        return ReplaySummary(Counter({"not_json": 2}), read=3, refused=[refusal])

    monkeypatch.setattr(dlq, "replay_dlq", fake_replay)
    result = runner.invoke(app, ["dlq", "replay"])
    assert result.exit_code == 1
    assert "sent 2 messages" in result.output
    assert f"slmstream dlq replay: {refusal}" in result.output.splitlines()


@pytest.fixture
def narrow_err(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import common

    monkeypatch.setattr(common.err, "width", 30)


def test_summary_table_counts_the_refused() -> None:
    s = ReplaySummary(Counter({"not_json": 1}), read=2, refused=[Refusal("d:0:1", "too_large", "gone")])
    text = render(s, dry_run=False)
    assert "refused (see below)" in text
