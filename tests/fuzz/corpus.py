"""A deterministic corpus of hostile Kafka messages for the input path (nothing is written to disk).

`corpus()` returns > 10,000 `Hostile` items, each a `(key, value, headers)` message plus the category it
came from, the outcomes the spec allows for it (README "Input event", schemas/event.schema.json, the
default `InputSettings`), and a short note. About 2 % are plain valid events (category `valid`); other
categories hold valid events too where the hostile part is one a valid event may carry (odd keys, odd
headers, escaped control characters, huge but allowed attrs...).

`expect` is a set of outcome names: an error type of schemas.DLQ_ERROR_TYPES, `valid` (an Event), or
`rejected` (any Rejection). An empty set means "anything, as long as nothing raises" (mutations, token
soup). Sizes, empty values and the byte limit are applied last: a value over `max_event_bytes` must be
`too_large` whatever it holds, an empty or null one `empty_message`.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator
from functools import cache
from typing import NamedTuple

import orjson

from pipeline.config import InputSettings
from pipeline.ingest.validate import MAX_EPOCH_MS, MAX_SHORT_FIELD, MIN_EPOCH_MS

LIMITS = InputSettings()
MAX_BYTES = LIMITS.max_event_bytes  # 65536
MAX_TEXT = LIMITS.max_text_chars  # 4000
MAX_DEPTH = LIMITS.max_depth  # 16
MIB = 1 << 20
SEED = 20261127

Header = tuple[str, bytes | None]
VALID = frozenset({"valid"})
REJECTED = frozenset({"rejected"})
ANY: frozenset[str] = frozenset()


class Hostile(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    category: str
    expect: frozenset[str]
    note: str


def one(*outcomes: str) -> frozenset[str]:
    return frozenset(outcomes)


def allows(expect: frozenset[str], outcome: str) -> bool:
    """Whether `outcome` (`valid` or an error type) is one the item allows."""
    if not expect:
        return True
    return outcome in expect or ("rejected" in expect and outcome != "valid")


# ---- building blocks ---------------------------------------------------------------------------------------
TEXTS = [
    "I was charged twice for my order",
    "Where is my parcel? It has been two weeks",
    "The app crashes when I open settings",
    "Please cancel my subscription",
    "Love the new update, great work!",
    "How do I reset my password?",
    "Refund still not received after 10 days",
    "Mi pedido llegó roto",
    "Das Paket ist nicht angekommen",
    "注文した商品がまだ届きません",
    "Заказ не пришёл 😡",
    "ok",
    "?",
]
# A JSON string body per char kind: (json text of one char, python char)
CHAR_FORMS = [
    ("x", "x"),
    ("é", "é"),
    ("€", "€"),
    ("😀", "😀"),
    ("\\u00e9", "é"),
    ("\\ud83d\\ude00", "😀"),
    ("\\n", "\n"),
    ("\\u0000", "\x00"),
]

OVERLONG = [
    b"\xc0\x80",
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xe0\x80\x80",
    b"\xe0\x80\xaf",
    b"\xe0\x9f\xbf",
    b"\xf0\x80\x80\x80",
    b"\xf0\x80\x80\xaf",
    b"\xf0\x8f\xbf\xbf",
    b"\xf8\x88\x80\x80\x80",
    b"\xfc\x84\x80\x80\x80\x80",
]
# Lone surrogates (and a surrogate pair) encoded the CESU-8 way: not UTF-8.
CESU = [
    b"\xed\xa0\x80",
    b"\xed\xad\xbf",
    b"\xed\xae\x80",
    b"\xed\xaf\xbf",
    b"\xed\xb0\x80",
    b"\xed\xbe\x80",
    b"\xed\xbf\xbf",
    b"\xed\xa0\xbd\xed\xb8\x80",
]
TRUNCATED = [b"\xc3", b"\xdf", b"\xe2\x82", b"\xe2", b"\xef\xbb", b"\xf0", b"\xf0\x9f", b"\xf0\x9f\x98"]
OTHER_BAD = [
    b"\x80",
    b"\xbf",
    b"\xfe",
    b"\xff",
    b"\xfe\xff",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xf7\xbf\xbf\xbf",
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xe2\x28\xa1",
    b"\xe2\x82\x28",
    b"\xf0\x28\x8c\xbc",
    b"\xf0\x90\x28\xbc",
]
BAD_UTF8 = OVERLONG + CESU + TRUNCATED + OTHER_BAD

NAN_LITERALS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "+Infinity",
    "nan",
    "-nan",
    "+NaN",
    "-NaN",
    "inf",
    "-inf",
    "infinity",
    "NAN",
    "Inf",
    "1e400",
    "-1e400",
    "1E+9999",
    "9" * 400,
]
BAD_NUMBERS = ["01", "1.", ".5", "+1", "0x1F", "1e", "1e+", "--1", "1_000", "١٢", "0b1", "1.2.3", "-", "Infinity1"]

# Per field: (JSON text of a value, outcome of {"text": "ok", <field>: value}). For `text` the base has no
# other text. Order of the checks in the spec: text, id, source, key, attrs, ts (see FIELD_ORDER).
FIELD_ORDER = ["text", "id", "source", "key", "attrs", "ts"]
_NON_STRINGS = ["null", "true", "false", "0", "-1.5e3", "[]", '["a"]', "{}", '{"text":"x"}', "[[[]]]"]
FIELD_POOLS: dict[str, list[tuple[str, str]]] = {
    "text": [(v, "wrong_type") for v in _NON_STRINGS]
    + [
        ('""', "empty_text"),
        ('" \\t\\n\\r"', "empty_text"),
        ('"\\u3000\\u2003\\u00a0"', "empty_text"),
        ('"\\u001c\\u001f"', "empty_text"),
        ('"ok"', "valid"),
        ('"\\u0000"', "valid"),
        ('"\\u200b"', "valid"),
        ('"' + "t" * MAX_TEXT + '"', "valid"),
        ('"' + "t" * (MAX_TEXT + 1) + '"', "text_too_long"),
    ],
    "id": [(v, "wrong_type") for v in _NON_STRINGS]
    + [
        ('""', "wrong_type"),
        ('"' + "i" * (MAX_SHORT_FIELD + 1) + '"', "wrong_type"),
        ('"' + "i" * MAX_SHORT_FIELD + '"', "valid"),
        ('"ok-id"', "valid"),
        ('"\\u0000"', "valid"),
    ],
    "source": [(v, "wrong_type") for v in _NON_STRINGS]
    + [
        ('""', "valid"),
        ('"' + "s" * (MAX_SHORT_FIELD + 1) + '"', "wrong_type"),
        ('"' + "s" * MAX_SHORT_FIELD + '"', "valid"),
        ('"email"', "valid"),
    ],
    "key": [(v, "wrong_type") for v in _NON_STRINGS]
    + [
        ('""', "valid"),
        ('"' + "k" * (MAX_SHORT_FIELD + 1) + '"', "wrong_type"),
        ('"' + "k" * MAX_SHORT_FIELD + '"', "valid"),
        ('"cust-1"', "valid"),
    ],
    "attrs": [(v, "wrong_type") for v in ["null", "true", "0", '"s"', "[]", "[{}]", '""']]
    + [("{}", "valid"), ('{"a":null,"b":[1,{"c":"d"}]}', "valid")],
    "ts": [(v, "wrong_type") for v in ["null", "true", "false", "[]", "{}", "[1795812754000]", '{"ms":1}']]
    + [
        (v, "bad_timestamp")
        for v in [
            "0",
            "-1",
            "1.5",
            "1795812754",
            str(MIN_EPOCH_MS - 1),
            str(MAX_EPOCH_MS + 1),
            '""',
            '"yesterday"',
            '"2026-11-27"',
            '"2026-11-27T20:52:34"',
            '"2026-13-01T00:00:00Z"',
            '"2026-02-30T00:00:00Z"',
            '"1795812754000"',
        ]
    ]
    + [
        ("1795812754000", "valid"),
        (str(MIN_EPOCH_MS), "valid"),
        (str(MAX_EPOCH_MS), "valid"),
        ('"2026-11-27T20:52:34Z"', "valid"),
        ('"2026-11-27T20:52:34.250+05:30"', "valid"),
    ],
}


def _jstr(s: str) -> str:
    return orjson.dumps(s).decode()


def _valid_field(rng: random.Random, name: str, uid: str) -> str:
    """JSON text of a valid value for `name`."""
    if name == "text":
        return _jstr(rng.choice(TEXTS))
    if name == "id":
        return _jstr(uid)
    if name == "source":
        return _jstr(rng.choice(["email", "chat", "app", ""]))
    if name == "key":
        return _jstr(f"cust-{rng.randrange(1000)}")
    if name == "attrs":
        return rng.choice(["{}", '{"tier":"gold"}', '{"n":1,"tags":["a","b"]}'])
    return rng.choice(['"2026-11-27T20:52:34Z"', "1795812754000", '"2026-11-27T21:00:00+01:00"'])


def _obj(members: list[tuple[str, str]]) -> bytes:
    """A JSON object from (raw name, JSON value text) pairs, as written (duplicates kept)."""
    return ("{" + ",".join(f"{_jstr(k)}:{v}" for k, v in members) + "}").encode()


def _event_bytes(rng: random.Random, uid: str, *, fields: tuple[str, ...] = ("text",)) -> bytes:
    members = [(f, _valid_field(rng, f, uid)) for f in fields]
    rng.shuffle(members)
    return _obj(members)


def _valid_doc(rng: random.Random, uid: str) -> dict:
    doc: dict = {"id": uid, "text": rng.choice(TEXTS)}
    if rng.random() < 0.3:
        doc["text"] += " " + "".join(rng.choice(string.ascii_letters + " éü😀") for _ in range(rng.randrange(40)))
    r = rng.random()
    if r < 0.15:
        doc["ts"] = 1_795_812_754_000 + rng.randrange(10**9)
    elif r < 0.3:
        doc["ts"] = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    if rng.random() < 0.5:
        doc["source"] = rng.choice(["email", "chat", "ticket", "log", "post"])
    if rng.random() < 0.5:
        doc["key"] = f"cust-{rng.randrange(10_000)}"
    if rng.random() < 0.5:
        doc["attrs"] = {"tier": rng.choice(["gold", "free"]), "n": rng.randrange(100), "l": [1, {"x": None}]}
    return doc


def _small_key(rng: random.Random) -> bytes | None:
    return None if rng.random() < 0.5 else f"k{rng.randrange(10_000)}".encode()


def _small_headers(rng: random.Random) -> list[Header]:
    if rng.random() < 0.7:
        return []
    return [("trace-id", rng.randbytes(8).hex().encode()) for _ in range(rng.randint(1, 3))]


# ---- the categories ----------------------------------------------------------------------------------------
# Each generator yields (key, value, headers, expect, note); `None` for key/headers means "pick a plain one".
Gen = Iterator[tuple[bytes | None, bytes | None, list[Header] | None, frozenset[str], str]]


def gen_random_bytes(rng: random.Random, n: int) -> Gen:
    specials = [0, 0, 1, 65535, 65536, 65537, 100_000, MIB]
    for i in range(n):
        if i < len(specials):
            size = specials[i]
        else:
            low, high = rng.choice([(1, 16), (17, 256), (257, 4096), (1, 70_000)])
            size = rng.randint(low, high)
        yield None, rng.randbytes(size), None, REJECTED, f"{size} random bytes"


def gen_random_text(rng: random.Random, n: int) -> Gen:
    tokens = ["{", "}", "[", "]", ":", ",", '"text"', '"id"', '"ts"', '"a"', "null", "true", "1", "-0.5e3", '"\\u0041"']
    tokens += ['"', "\\", " ", "\n", "'text'", "text", "{}", '"\\', "/*", "*/"]
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:
            s = "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 300)))
            yield None, s.encode(), None, ANY, "printable noise"
        elif kind == 1:
            cps = [rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])]
            cps += [rng.randint(0xA0, 0xD7FF) for _ in range(rng.randint(0, 200))]
            yield None, "".join(map(chr, cps)).encode(), None, ANY, "unicode noise"
        elif kind == 2:
            s = "".join(rng.choice(tokens) for _ in range(rng.randint(1, 60)))
            yield None, s.encode(), None, ANY, "JSON token soup"
        else:
            scalar = rng.choice(['"a string"', "12", "-0", "true", "false", "null", '""', "[1,2]", '"{\\"text\\":1}"'])
            yield None, scalar.encode(), None, one("not_object"), f"top-level {scalar}"


def gen_invalid_utf8(rng: random.Random, n: int) -> Gen:
    for i in range(n):
        bad = rng.choice(BAD_UTF8)
        where = rng.randrange(7)
        uid = f"u8-{i}"
        if where == 0:  # inside text
            value = b'{"id":"' + uid.encode() + b'","text":"caf' + bad + b' au lait"}'
        elif where == 1:  # inside a member name
            value = b'{"text":"ok","na' + bad + b'me":1}'
        elif where == 2:  # inside attrs, deeper
            value = b'{"text":"ok","attrs":{"a":["x' + bad + b'"]}}'
        elif where == 3:  # message truncated in the middle of a character (or a bad tail)
            value = ('{"text":"' + rng.choice(TEXTS)).encode() + bad
        elif where == 4:  # before the JSON
            value = bad + b'{"text":"ok"}'
        elif where == 5:  # many of them
            value = b'{"text":"' + b"".join(rng.choice(BAD_UTF8) + b"a" for _ in range(rng.randint(2, 500))) + b'"}'
        else:  # the whole value
            value = bad * rng.randint(1, 50)
        yield None, value, None, one("not_utf8"), f"{bad.hex()} at {where}"


def _nest(depth: int, kinds: str, leaf: str = "1") -> str:
    """`depth` nested containers ("o" object / "a" array / "m" mixed) around `leaf`."""
    opens, closes = [], []
    for level in range(depth):
        obj = kinds == "o" or (kinds == "m" and level % 2 == 0)
        opens.append('{"a":' if obj else "[")
        closes.append("}" if obj else "]")
    return "".join(opens) + leaf + "".join(reversed(closes))


def gen_deep_nesting(rng: random.Random, n: int) -> Gen:
    boundary = [10, 14, 15, 16, 17, 18, 100, 1022, 1023, 1024, 1025, 1026, 4999, 5000]
    for _ in range(n):
        d = rng.choice(boundary) if rng.random() < 0.35 else int(10 ** rng.uniform(1, 3.7))
        d = max(10, min(d, 5000))
        kinds = rng.choice("oam")
        shape = rng.randrange(6)
        if shape == 0:  # top-level object nest without text: depth d
            yield None, _nest(d, "o").encode(), None, one("missing_field" if d <= MAX_DEPTH else "too_deep"), f"obj {d}"
        elif shape == 1:  # a valid event whose attrs hold the nest: total depth d
            body = '{"text":"x","attrs":{"l":' + _nest(d - 2, kinds) + "}}"
            yield None, body.encode(), None, VALID if d <= MAX_DEPTH else one("too_deep"), f"attrs {kinds} {d}"
        elif shape == 2:  # top-level array nest
            yield None, _nest(d, "a").encode(), None, one("not_object", "too_deep"), f"array {d}"
        elif shape == 3:  # opened, never closed
            s = ('{"a":' if kinds == "o" else "[") * d
            yield None, s.encode(), None, one("not_json", "too_deep"), f"unclosed {kinds} {d}"
        elif shape == 4:  # the nest in `text` / `id` / `ts`: a type error unless too deep first
            field = rng.choice(["text", "id", "ts"])
            base = '{"text":"x",' if field != "text" else "{"
            body = base + f'"{field}":' + _nest(d - 1, kinds) + "}"
            yield None, body.encode(), None, one("wrong_type" if d <= MAX_DEPTH else "too_deep"), f"{field} {d}"
        else:  # wide and deep: many siblings each nested
            width = rng.randint(2, 20)
            inner = ",".join(_nest(min(d, 200) - 2, kinds) for _ in range(width))
            body = '{"text":"x","attrs":{"l":[' + inner + "]}}"
            total = min(d, 200) + 1
            yield None, body.encode(), None, VALID if total <= MAX_DEPTH else one("too_deep"), f"wide {width}x{total}"


def _sized_text_event(total: int, prefix: str = '{"text":"', suffix: str = '"}', fill: str = "x") -> bytes:
    n = max(total - len(prefix) - len(suffix), 0) // len(fill)
    return (prefix + fill * n + suffix).encode()


def gen_huge_strings(rng: random.Random, n: int) -> Gen:
    far = [MIB, MIB, 1_153_434, MIB + 1, 1_153_434, MIB]  # 1 MiB and 1.1 MiB: far over the limit
    totals = [4100, 30_000, 65_535, 65_536, 65_537, 66_000, 100_000, 300_000]
    for i in range(n):
        kind = rng.randrange(6) if i >= len(far) else -1
        if kind == -1:  # far over
            v = _sized_text_event(far[i])
            yield None, v, None, one("too_large"), f"text message of {len(v)} bytes"
        elif kind == 0:  # a long text sized to a total message length
            total = rng.choice(totals)
            v = _sized_text_event(total)
            yield None, v, None, one("text_too_long"), f"text message of {len(v)} bytes"
        elif kind == 1:  # exactly at / over the text limit, in chars of different widths and escapes
            form, char = rng.choice(CHAR_FORMS)
            count = rng.choice([MAX_TEXT - 1, MAX_TEXT, MAX_TEXT + 1, 2 * MAX_TEXT])
            v = ('{"text":"a' + form * (count - 1) + '"}').encode()  # "a" first: never only whitespace
            expect = VALID if count <= MAX_TEXT else one("text_too_long")
            yield None, v, None, expect, f"text of {count} x {form!r}"
        elif kind == 2:  # a whitespace-only huge text: empty before long
            form = rng.choice([" ", "\\n", "\\t", "\\u3000", "\\u2003"])
            v = _sized_text_event(rng.choice([5000, 40_000, 65_536]), fill=form)
            yield None, v, None, one("empty_text"), f"whitespace text {form!r} of {len(v)} bytes"
        elif kind == 3:  # huge id / source / key
            field = rng.choice(["id", "source", "key"])
            v = _sized_text_event(rng.choice([2000, 60_000, 65_536]), prefix='{"text":"ok","' + field + '":"')
            yield None, v, None, one("wrong_type"), f"{field} of {len(v)} bytes"
        elif kind == 4:  # a huge but allowed attrs string
            v = _sized_text_event(rng.choice([10_000, 60_000, 65_536, 65_537]), prefix='{"text":"ok","attrs":{"b":"')
            v = v[:-2] + b'"}}'
            yield None, v, None, VALID, f"attrs blob, message of {len(v)} bytes"
        else:  # a huge unknown top-level field
            v = _sized_text_event(rng.choice([50_000, 65_536, 70_000]), prefix='{"text":"ok","blob":"')
            yield None, v, None, VALID, f"extra field, message of {len(v)} bytes"


def _array(count: int, elem: str) -> str:
    return "[" + ",".join([elem] * count) + "]"


def gen_huge_arrays(rng: random.Random, n: int) -> Gen:
    far_over = 4
    for i in range(n):
        total = MIB if i < far_over else rng.choice([1000, 30_000, 65_000, 65_536, 65_537, 200_000])
        elem = rng.choice(["0", "1.5", '"x"', "null", "{}", "[]", '{"b":[1,2]}', "true"])
        count = max(total // (len(elem) + 1), 1)
        shape = rng.randrange(4) if i >= far_over else 0
        if shape == 0:
            body = '{"text":"ok","attrs":{"a":' + _array(count, elem) + "}}"
            yield None, body.encode(), None, VALID, f"attrs array of {count} {elem}"
        elif shape == 1:
            yield None, _array(count, elem).encode(), None, one("not_object"), f"top-level array of {count} {elem}"
        elif shape == 2:
            body = '{"text":' + _array(count, elem) + "}"
            yield None, body.encode(), None, one("wrong_type"), f"text array of {count}"
        else:  # many members instead of many elements
            members = ",".join(f'"m{j}":{elem}' for j in range(count // 4))
            body = '{"text":"ok",' + members + "}"
            yield None, body.encode(), None, VALID, f"{count // 4} members"


def gen_nan_infinity(rng: random.Random, n: int) -> Gen:
    for i in range(n):
        lit = rng.choice(NAN_LITERALS)
        where = rng.randrange(6)
        if where == 0:
            field = rng.choice(["text", "id", "ts", "source", "key", "attrs"])
            base = '{"text":"ok",' if field != "text" else "{"
            yield None, f'{base}"{field}":{lit}}}'.encode(), None, one("not_json"), f"{field}={lit}"
        elif where == 1:
            yield None, f'{{"text":"ok","attrs":{{"x":[1,{lit},3]}}}}'.encode(), None, one("not_json"), f"attrs {lit}"
        elif where == 2:
            yield None, lit.encode(), None, one("not_json"), f"top-level {lit}"
        elif where == 3:
            yield None, f"[{lit}]".encode(), None, one("not_json"), f"array {lit}"
        else:  # the same words as strings: ordinary values
            lit = lit[:40]
            field = rng.choice(["text", "id", "ts", "source"])
            base = '{"text":"ok",' if field != "text" else "{"
            expect = one("bad_timestamp") if field == "ts" else VALID
            if field == "id":
                lit = f"{lit}-{i}"
            yield None, f'{base}"{field}":"{lit}"}}'.encode(), None, expect, f'{field}="{lit}"'


def gen_duplicate_keys(rng: random.Random, n: int) -> Gen:
    fixed = [
        (b'{"text":"a","text":5}', one("wrong_type")),
        (b'{"text":5,"text":"a"}', VALID),
        (b'{"text":"a","text":""}', one("empty_text")),
        (b'{"text":"","text":"a"}', VALID),
        (b'{"text":5,"\\u0074ext":"a"}', VALID),  # the same name, escaped: still a duplicate
        (b'{"text":"a","te\\u0078t":null}', one("wrong_type")),
        (b'{"text":"a","attrs":{"k":1,"k":[1]}}', VALID),
        (b'{"text":"a","attrs":{},"attrs":[]}', one("wrong_type")),
    ]
    for i in range(n):
        if i < len(fixed):
            value, expect = fixed[i]
            yield None, value, None, expect, "fixed duplicate"
            continue
        field = rng.choice(FIELD_ORDER)
        copies = rng.choice([2, 2, 3, 5, 10]) if rng.random() < 0.95 else rng.randint(100, 2000)
        values = [rng.choice(FIELD_POOLS[field]) for _ in range(copies)]
        members = [] if field == "text" else [("text", '"ok"')]
        members += [(field, v) for v, _ in values]
        outcome = values[-1][1]  # the last one wins
        yield None, _obj(members), None, one(outcome), f"{copies} x {field}, last {values[-1][0][:20]}"


def _expect_fields(outcomes: dict[str, str]) -> frozenset[str]:
    for f in FIELD_ORDER:
        if outcomes.get(f, "valid") != "valid":
            return one(outcomes[f])
    return VALID


def gen_wrong_types(rng: random.Random, n: int) -> Gen:
    for i in range(n):
        wrong = [FIELD_ORDER[i % len(FIELD_ORDER)]]
        if rng.random() < 0.15:
            wrong.append(rng.choice(FIELD_ORDER))
        outcomes: dict[str, str] = {}
        members: list[tuple[str, str]] = []
        for f in dict.fromkeys(wrong):
            v, outcome = rng.choice(FIELD_POOLS[f])
            if f == "id" and v == '"ok-id"':
                v = _jstr(f"ok-id-{i}")
            members.append((f, v))
            outcomes[f] = outcome
        for f in FIELD_ORDER:
            if f not in outcomes and (f == "text" or rng.random() < 0.5):
                members.append((f, _valid_field(rng, f, f"wt-{i}")))
        rng.shuffle(members)
        yield None, _obj(members), None, _expect_fields(outcomes), ", ".join(f"{f}={v[:20]}" for f, v in members)


def _parsed_number(lit: str) -> tuple[bool, object]:
    try:
        return True, orjson.loads(lit)
    except orjson.JSONDecodeError:
        return False, None


def gen_out_of_range_numbers(rng: random.Random, n: int) -> Gen:
    lits = ["1e308", "-1e308", "18446744073709551616", "18446744073709551615", "-9223372036854775809"]
    lits += ["1" + "0" * 30, "-0", "-0.0", "0e0", "1e-400", "4.9e-324", "9007199254740993", "1795812754000.999"]
    lits += ["1.795812754e12", str(MIN_EPOCH_MS - 1), str(MIN_EPOCH_MS), str(MAX_EPOCH_MS), str(MAX_EPOCH_MS + 1)]
    lits += ["0." + "0" * 500 + "1", "-" + "9" * 308, "9" * 309, "1E400", "2e-5"]
    for i in range(n):
        if rng.random() < 0.2:
            lit = rng.choice(BAD_NUMBERS)
        elif rng.random() < 0.3:
            digits = rng.choice([19, 20, 40, 300, 310, 1000])
            lit = rng.choice(["", "-"]) + "".join(rng.choice(string.digits[1:]) for _ in range(digits))
        else:
            lit = rng.choice(lits)
        field = rng.choice(["ts", "ts", "text", "id", "attrs", "top"])
        ok, num = _parsed_number(lit)
        if field == "top":
            yield None, lit.encode(), None, one("not_object") if ok else one("not_json"), f"top-level {lit[:30]}"
            continue
        if field == "attrs":
            value = f'{{"text":"ok","attrs":{{"n":{lit}}}}}'
            outcome = "valid"
        elif field == "ts":
            value = f'{{"text":"ok","ts":{lit}}}'
            outcome = "valid" if ok and MIN_EPOCH_MS <= num <= MAX_EPOCH_MS else "bad_timestamp"  # type: ignore[operator]
        else:
            value = f'{{"text":"ok","{field}":{lit}}}' if field != "text" else f'{{"text":{lit}}}'
            outcome = "wrong_type"
        yield None, value.encode(), None, one(outcome) if ok else one("not_json"), f"{field}={lit[:30]} #{i}"


def gen_empty_values(rng: random.Random, n: int) -> Gen:
    cases: list[tuple[bytes | None, frozenset[str]]] = [
        (None, one("empty_message")),
        (b"", one("empty_message")),
        (b" ", one("not_json")),
        (b"\n", one("not_json")),
        (b"\t\r\n ", one("not_json")),
        (b"\x00", one("not_json")),
        (b"{}", one("missing_field")),
        (b"null", one("not_object")),
        (b'""', one("not_object")),
        (b"[]", one("not_object")),
        (b"0", one("not_object")),
        (b"false", one("not_object")),
        (b'{"text":null}', one("wrong_type")),
        (b'{"text":""}', one("empty_text")),
        (b'{"":""}', one("missing_field")),
        (b'{"text":"ok","attrs":null}', one("wrong_type")),
        (b'{"text":"ok","id":null}', one("wrong_type")),
        (b'{"text":"ok","id":""}', one("wrong_type")),
        (b'{"text":"ok","ts":null}', one("wrong_type")),
        (b'{"text":"ok","ts":""}', one("bad_timestamp")),
        (b'{"text":"ok","source":"","key":"","attrs":{}}', VALID),
    ]
    for i in range(n):
        value, expect = cases[i % len(cases)]
        key = rng.choice([None, b"", b"\x00", _small_key(rng)])
        headers = rng.choice([[], [("", None)], [("", b"")], _small_headers(rng)])
        yield key, value, headers, expect, f"{value!r:.20} key={key!r:.10}"


def _some_value(rng: random.Random, uid: str) -> tuple[bytes, frozenset[str]]:
    """Half valid events, half a few common rejections."""
    if rng.random() < 0.5:
        return _event_bytes(rng, uid, fields=("text", "id")), VALID
    return rng.choice(
        [
            (b"not json", one("not_json")),
            (b'{"text":1}', one("wrong_type")),
            (b"[1]", one("not_object")),
            (b'{"id":"x"}', one("missing_field")),
            (b"\xff\xfe", one("not_utf8")),
            (b'{"text":"ok","ts":"never"}', one("bad_timestamp")),
        ]
    )


def gen_kafka_keys(rng: random.Random, n: int) -> Gen:
    for i in range(n):
        kind = rng.randrange(9)
        key: bytes | None = [
            None,
            b"",
            b"\x00",
            rng.randbytes(rng.randint(1, 64)),
            rng.choice(BAD_UTF8) * 3,
            b"k" * 10_000,
            b"k" * rng.choice([60_000, 100_000]),
            b'{"text":"in the key"}',
            "ключ\n😀".encode(),
        ][kind]
        value, expect = _some_value(rng, f"kk-{i}")
        size = 0 if key is None else len(key)
        yield key, value, rng.choice([[], _small_headers(rng)]), expect, f"key kind {kind}, {size} bytes"


HEADER_NAMES = [
    "",
    " ",
    "é",
    "ключ",
    "😀",
    "\x00",
    "\n",
    "\t",
    "a" * 1000,
    "Content-Type",
    "slmstream-origin",
    "slmstream-origin-ts",
    "slmstream-replayed-from",
    "\u202e",
    "\ufeff",
    "x y",
    "key:with:colons",
    "\x7f\x1b[31m",
]


def _header_value(rng: random.Random) -> bytes | None:
    return rng.choice(
        [
            None,
            b"",
            rng.randbytes(rng.randint(1, 32)),
            rng.choice(BAD_UTF8),
            b"\x00" * 10,
            b"h" * 10_000,
            b"events:0:0",
            b"not:a:number",
            b"-1",
            "значение".encode(),
        ]
    )


def gen_headers(rng: random.Random, n: int) -> Gen:
    for i in range(n):
        count = rng.choice([1, 1, 2, 3, 5]) if rng.random() < 0.95 else rng.randint(50, 300)
        headers = [(rng.choice(HEADER_NAMES), _header_value(rng)) for _ in range(count)]
        if rng.random() < 0.2:  # the same name many times
            headers += [(headers[0][0], _header_value(rng)) for _ in range(rng.randint(2, 10))]
        value, expect = _some_value(rng, f"hd-{i}")
        yield _small_key(rng), value, headers, expect, f"{len(headers)} odd headers"


def gen_bom(rng: random.Random, n: int) -> Gen:
    for i in range(n):
        event = _event_bytes(rng, f"bom-{i}", fields=("text", "id"))
        text = event.decode()
        kind = rng.randrange(9)
        if kind == 0:
            yield None, b"\xef\xbb\xbf" + event, None, one("not_json"), "UTF-8 BOM"
        elif kind == 1:
            yield None, b"\xef\xbb\xbf\xef\xbb\xbf" + event, None, one("not_json"), "two UTF-8 BOMs"
        elif kind == 2:
            yield None, "\ufeff".encode("utf-16-le") + text.encode("utf-16-le"), None, one("not_utf8"), "UTF-16LE BOM"
        elif kind == 3:
            yield None, "\ufeff".encode("utf-16-be") + text.encode("utf-16-be"), None, one("not_utf8"), "UTF-16BE BOM"
        elif kind == 4:
            yield None, text.encode("utf-32"), None, one("not_utf8"), "UTF-32 with BOM"
        elif kind == 5:  # UTF-16 without BOM: NUL bytes are valid UTF-8, so it is just not JSON
            yield None, text.encode("utf-16-le"), None, one("not_json", "not_utf8"), "UTF-16LE no BOM"
        elif kind == 6:
            yield None, b"\xef\xbb\xbf", None, one("not_json"), "BOM only"
        elif kind == 7:  # a BOM inside the text: an ordinary character
            yield None, b'{"text":"\xef\xbb\xbfhello"}', None, VALID, "BOM in text"
        else:  # a BOM in front of the member name: that member is not `text`
            yield None, b'{"\xef\xbb\xbftext":"hello"}', None, one("missing_field"), "BOM in member name"


def gen_trailing_garbage(rng: random.Random, n: int) -> Gen:
    suffixes = [b"x", b"}", b"]", b",", b"\x00", b"{}", b"//c", b"/*c*/", b"#", b"\x1a", b"null", b'"', b"\\"]
    prefixes = [b"x", b"\x00", b")]}'\n", b"callback(", b",", b"//\n", b"\x1a"]
    for i in range(n):
        event = _event_bytes(rng, f"tg-{i}", fields=("text", "id"))
        kind = rng.randrange(6)
        if kind == 0:
            s = rng.choice(suffixes)
            yield None, event + s, None, one("not_json"), f"suffix {s!r}"
        elif kind == 1:
            yield None, event + event, None, one("not_json"), "two objects"
        elif kind == 2:
            p = rng.choice(prefixes)
            yield None, p + event, None, one("not_json"), f"prefix {p!r}"
        elif kind == 3:  # trailing JSON whitespace is fine
            s = rng.choice([b" ", b"\n", b"\r\n", b"\t \n"])
            yield None, event + s, None, VALID, f"whitespace suffix {s!r}"
        elif kind == 4:
            yield None, event + b"\xff", None, one("not_utf8"), "suffix 0xff"
        else:
            junk = rng.randbytes(rng.randint(1, 200)).replace(b" ", b"x").replace(b"\n", b"x")
            junk = junk.replace(b"\t", b"x").replace(b"\r", b"x")
            yield None, event + junk, None, one("not_json", "not_utf8"), "random suffix"


def gen_control_chars(rng: random.Random, n: int) -> Gen:
    specials = ["\u0085", "\u2028", "\u2029", "\u200b", "\u200e", "\u202e", "\ufffe", "\uffff", "\u00ad", "\x7f"]
    for i in range(n):
        kind = rng.randrange(6)
        c = rng.randrange(0x20)
        if kind == 0:  # a raw control byte inside a string
            field = rng.choice(["text", "id", "attrs"])
            raw = bytes([c])
            if field == "text":
                v = b'{"text":"a' + raw + b'b"}'
            elif field == "id":
                v = b'{"text":"ok","id":"a' + raw + b'"}'
            else:
                v = b'{"text":"ok","attrs":{"k' + raw + b'":1}}'
            yield None, v, None, one("not_json"), f"raw {c:#04x} in {field}"
        elif kind == 1:  # escaped control characters: allowed, unless the text is only whitespace
            chars = [chr(rng.randrange(0x20)) for _ in range(rng.randint(1, 20))]
            text = "".join(chars)
            v = orjson.dumps({"text": text, "id": f"cc-{i}"})
            expect = one("empty_text") if text.isspace() else VALID
            yield None, v, None, expect, f"escaped controls {text!r:.30}"
        elif kind == 2:  # a raw control byte between tokens: JSON whitespace or an error
            raw = bytes([c])
            v = b"{" + raw + b'"text"' + raw + b":" + raw + b'"ok"' + raw + b"}"
            expect = VALID if raw in (b" ", b"\t", b"\n", b"\r") else one("not_json")
            yield None, v, None, expect, f"raw {c:#04x} between tokens"
        elif kind == 3:  # unicode specials (format, separators, non-characters), UTF-8 encoded
            text = "".join(rng.choice(specials) for _ in range(rng.randint(1, 10)))
            v = orjson.dumps({"text": text, "id": f"cc-{i}"})
            expect = one("empty_text") if text.isspace() else VALID
            yield None, v, None, expect, f"specials {text!r:.30}"
        elif kind == 4:  # a text of only NULs (escaped)
            count = rng.choice([1, 10, MAX_TEXT, MAX_TEXT + 1])
            v = ('{"text":"' + "\\u0000" * count + '"}').encode()
            yield None, v, None, VALID if count <= MAX_TEXT else one("text_too_long"), f"{count} NULs"
        else:  # DEL and C1 raw in strings: allowed
            v = orjson.dumps({"text": "a\x7fb\x80c\x9f", "id": f"cc-{i}", "source": "\x7f"})
            yield None, v, None, VALID, "DEL and C1 controls"


def gen_long_field_names(rng: random.Random, n: int) -> Gen:
    for i in range(n):
        kind = rng.randrange(5)
        if kind == 0:
            size = rng.choice([1000, 10_000, 60_000, 65_000, 65_600, MIB if i < 2 else 70_000])
            v = ('{"text":"ok","' + "n" * size + '":1}').encode()
            yield None, v, None, VALID, f"member name of {size}"
        elif kind == 1:  # only a huge name, no text
            v = ('{"' + "n" * rng.choice([5000, 60_000]) + '":"text"}').encode()
            yield None, v, None, one("missing_field"), "huge name, no text"
        elif kind == 2:  # thousands of distinct names
            count = rng.choice([1000, 5000, 8000])
            v = ('{"text":"ok",' + ",".join(f'"k{j}":0' for j in range(count)) + "}").encode()
            yield None, v, None, VALID, f"{count} members"
        elif kind == 3:  # odd names: empty, escapes, unicode
            name = rng.choice(["", " ", "\\u0000", "\\ud83d\\ude00", "text ", "TEXT", "Text", "\\"])
            if name == "\\":
                name = "\\\\"
            v = ('{"text":"ok","' + name + '":1}').encode()
            yield None, v, None, VALID, f"name {name!r}"
        else:  # `text` only under a look-alike name
            name = rng.choice(["text ", "TEXT", "Text", " text", "te\\u200bxt", "texts"])
            v = ('{"' + name + '":"hello"}').encode()
            yield None, v, None, one("missing_field"), f"look-alike {name!r}"


def gen_mutations(rng: random.Random, n: int) -> Gen:
    tokens = [b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"null", b"\\u", b"\\ud800", b"\x00", b"\xff"]
    for i in range(n):
        v = bytearray(orjson.dumps(_valid_doc(rng, f"mu-{i}")))
        for _ in range(rng.randint(1, 4)):
            if not v:
                break
            pos = rng.randrange(len(v))
            op = rng.randrange(6)
            if op == 0:
                v[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                del v[pos]
            elif op == 2:
                v[pos:pos] = bytes([rng.randrange(256)])
            elif op == 3:
                v[pos:pos] = rng.choice(tokens)
            elif op == 4:
                del v[pos:]
            else:
                end = min(len(v), pos + rng.randint(1, 20))
                v[pos:pos] = v[pos:end]
        yield None, bytes(v), None, ANY, "mutated event"


# RFC 3339 date-times (valid), strings that are clearly not one (bad_timestamp), and strings that are not
# RFC 3339 either but that datetime.fromisoformat accepts (NOT_RFC3339: see test_findings.py).
TS_VALID = [
    "2026-11-27T20:52:34Z",
    "2026-11-27T20:52:34.250Z",
    "2026-11-27T20:52:34.123456789Z",
    "2026-11-27T20:52:34+05:30",
    "2026-11-27T20:52:34-00:00",
    "2026-11-27T20:52:34+23:59",
    "2026-02-28T23:59:59-23:59",
    "2024-02-29T00:00:00Z",
    # RFC 3339 and accepted, though numbers are held to 1973..3000 (to catch epoch seconds); strings are not
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
]
TS_BAD = [
    "2026-11-27T20:52:60Z",
    "2016-12-31T23:59:60Z",  # a leap second: RFC 3339 allows it, Python cannot represent it
    "0000-01-01T00:00:00Z",
    "2026-11-27T20:52:34+24:00",
    "2026-11-27T20:52:34Z ",
    " 2026-11-27T20:52:34Z",
    "2026-11-27T20:52:34ZZ",
    "+2026-11-27T20:52:34Z",
    "2026-11-27T20:52:34UTC",
    "2026-11-27 T20:52:34Z",
    "\uff12\uff10\uff12\uff16-11-27T20:52:34Z",
    "2026-02-29T00:00:00Z",
    "2026-11-27T20:52:34",
    "2026-11-27",
    "20:52:34Z",
    "1795812754000",
    "now",
]
NOT_RFC3339 = [
    "20261127T205234Z",  # ISO 8601 basic format
    "2026-11-27T205234Z",
    "2026-W48-5T20:52:34Z",  # ISO week date
    "2026-11-27T20Z",  # hour only
    "2026-11-27T20:52Z",  # no seconds
    "2026-11-27T20:52:34,5Z",  # comma decimal
    "2026-11-27T20:52:34.Z",  # empty fraction
    "2026-11-27T20:52:34+0200",  # offset without a colon
    "2026-11-27T20:52:34+02",  # hour-only offset
    "2026-11-27T20:52:34+23:59:59",  # offset with seconds
    "2026-11-27T20:52:34\u0000Z",  # a NUL inside
    "2026-11-27T20:52:34xZ",  # any one character after the seconds
    "2026-11-27t20:52:34zz",  # the last z becomes Z, the first passes as that one character
]


def gen_timestamps(rng: random.Random, n: int) -> Gen:
    for i in range(n):
        r = rng.random()
        if r < 0.35:
            ts, expect = rng.choice(TS_VALID), VALID
        elif r < 0.75:
            ts, expect = rng.choice(TS_BAD), one("bad_timestamp")
        else:
            ts, expect = rng.choice(NOT_RFC3339), ANY
        if expect == VALID and rng.random() < 0.3:
            ts = ts.lower()  # lower-case t and z are RFC 3339 too
        yield None, f'{{"text":"ok","id":"ts-{i}","ts":{_jstr(ts)}}}'.encode(), None, expect, repr(ts)


def gen_valid(rng: random.Random, n: int) -> Gen:
    for i in range(n):
        doc = _valid_doc(rng, f"valid-{i:04d}")
        opt = orjson.OPT_INDENT_2 if rng.random() < 0.2 else 0
        yield None, orjson.dumps(doc, option=opt), None, VALID, "valid event"


CATEGORIES: dict[str, tuple[Callable[[random.Random, int], Gen], int]] = {
    "random_bytes": (gen_random_bytes, 1000),
    "random_text": (gen_random_text, 400),
    "invalid_utf8": (gen_invalid_utf8, 1000),
    "deep_nesting": (gen_deep_nesting, 700),
    "huge_strings": (gen_huge_strings, 300),
    "huge_arrays": (gen_huge_arrays, 250),
    "nan_infinity": (gen_nan_infinity, 400),
    "duplicate_keys": (gen_duplicate_keys, 500),
    "wrong_types": (gen_wrong_types, 1500),
    "out_of_range_numbers": (gen_out_of_range_numbers, 600),
    "empty_values": (gen_empty_values, 300),
    "kafka_keys": (gen_kafka_keys, 400),
    "headers": (gen_headers, 800),
    "bom": (gen_bom, 300),
    "trailing_garbage": (gen_trailing_garbage, 500),
    "control_chars": (gen_control_chars, 800),
    "long_field_names": (gen_long_field_names, 200),
    "mutations": (gen_mutations, 600),
    "timestamps": (gen_timestamps, 300),
    "valid": (gen_valid, 220),
}


def _sized(value: bytes | None, expect: frozenset[str]) -> frozenset[str]:
    if not value:
        return one("empty_message")
    if len(value) > MAX_BYTES:
        return one("too_large")
    return expect


def generate(seed: int = SEED) -> list[Hostile]:
    """Build the corpus from `seed` (same seed, same bytes), shuffled."""
    items: list[Hostile] = []
    for category, (make, count) in CATEGORIES.items():
        rng = random.Random(f"{seed}:{category}")  # per category: adding one does not reshuffle the others
        for key, value, headers, expect, note in make(rng, count):
            if key is None and headers is None:
                key = _small_key(rng)
            items.append(
                Hostile(
                    key,
                    value,
                    headers if headers is not None else _small_headers(rng),
                    category,
                    _sized(value, expect),
                    note,
                )
            )
    random.Random(seed).shuffle(items)
    return items


@cache
def corpus(seed: int = SEED) -> tuple[Hostile, ...]:
    """The corpus, built once per process."""
    return tuple(generate(seed))


def digest(items: list[Hostile] | tuple[Hostile, ...]) -> str:
    """A fingerprint of the corpus bytes (to check it is deterministic)."""
    import hashlib

    h = hashlib.sha256()
    for it in items:
        h.update(repr((it.key, it.value, it.headers, it.category, sorted(it.expect))).encode())
    return h.hexdigest()
